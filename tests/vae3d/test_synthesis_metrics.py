"""Realism and diversity measures on data built for the test: they tell apart what differs and
not what does not."""

from __future__ import annotations

import torch

from vae3d.evaluation import c2st, synthesis


def _blobs(n: int, seed: int, bright: float = 0.6) -> torch.Tensor:
    """(n, 1, 16, 16, 16) smooth random volumes in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 1, 4, 4, 4, generator=g)
    return (torch.nn.functional.interpolate(coarse, size=(16, 16, 16), mode="trilinear") * bright).clamp(0, 1)


def test_the_two_sample_classifier_tells_different_sets_apart_and_not_alike_ones():
    real = _blobs(16, seed=0)
    alike = _blobs(16, seed=1)
    brighter = _blobs(16, seed=2) + 0.3
    assert c2st.classifier_two_sample(real, brighter, seed=0, size=16, steps=60) >= 0.9
    accuracy = c2st.classifier_two_sample(real, alike, seed=0, size=16, steps=60)
    assert accuracy <= 0.75
    # seeded: the same accuracy again
    assert c2st.classifier_two_sample(real, alike, seed=0, size=16, steps=60) == accuracy


def test_ms_ssim_diversity_and_mmd():
    same = _blobs(1, seed=0).repeat(4, 1, 1, 1, 1)
    varied = _blobs(4, seed=0)
    assert synthesis.ms_ssim_diversity(same) > 0.99
    assert synthesis.ms_ssim_diversity(varied) < synthesis.ms_ssim_diversity(same)
    # MONAI's unbiased estimate: near zero (either sign) for two sets of one kind, large for a shifted set
    alike = abs(synthesis.mmd(_blobs(8, seed=0), _blobs(8, seed=5)))
    assert synthesis.mmd(_blobs(8, seed=0), _blobs(8, seed=5) + 0.3) > 10 * alike


def test_the_memorisation_audit_flags_a_copy_and_not_an_average():
    """A training scan with a little noise is a copy; the mean of the training scans resembles each
    of them more than a held-out scan does, yet copies none of them; held-out-like scans pass."""
    anatomy = _blobs(1, seed=100)  # what every subject shares, and each subject's own part
    subjects = lambda n, seed: 0.6 * anatomy + 0.4 * _blobs(n, seed)
    train, heldout = subjects(12, seed=0), subjects(6, seed=1)
    g = torch.Generator().manual_seed(3)
    copy = (train[4:5] + 0.01 * torch.randn(1, 1, 16, 16, 16, generator=g)).clamp(0, 1)
    average = train.mean(0, keepdim=True)
    fresh = subjects(3, seed=2)
    audit = synthesis.memorisation_audit(torch.cat([copy, average, fresh]), train, heldout)
    assert audit["flagged"] == [0], audit
    assert audit["closer_than_heldout"] >= 2, audit  # the average is close too: closeness alone would flag it
    assert audit["distinctness_limit"] <= min(0.5, audit["heldout_distinctness_min"])
