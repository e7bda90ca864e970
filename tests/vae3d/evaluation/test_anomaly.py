"""The anomaly benchmark's metrics: voxel metrics score every lesion voxel, whatever a map masks out; the volume
AUROC comes with an interval that says how far so few scans can be trusted."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from vae3d.evaluation.anomaly import volume_auroc, volume_auroc_interval, voxel_metrics


def test_a_lesion_voxel_a_map_masks_out_counts_as_a_miss():
    masks = torch.zeros(1, 1, 8, 8, 8, dtype=torch.uint8)
    masks[0, 0, 2:4, 2:4, 2:4] = 1  # 8 lesion voxels
    head = torch.rand(1, 1, 8, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.01
    found = head.clone()
    found[masks.bool()] = 1.0  # every lesion voxel above every healthy one
    assert voxel_metrics(found, masks)["voxel_auprc"] == 1.0
    half = found.clone()
    half[0, 0, 2, 2:4, 2:4] = 0.0  # the map's mask leaves out half the lesion
    m = voxel_metrics(half, masks)
    assert m["voxel_auprc"] < 0.75  # half the lesion is missed, not dropped from the count
    assert 0.6 < m["best_dice"] < 0.7  # Dice 2*4 / (4 + 8) at best


def test_the_auroc_interval_holds_the_auroc_and_narrows_with_more_scans():
    rng = np.random.default_rng(0)
    healthy, lesioned = rng.normal(0, 1, 14), rng.normal(1.5, 1, 14)
    auroc = volume_auroc(healthy, lesioned)
    low, high = volume_auroc_interval(healthy, lesioned)
    assert 0.0 <= low < auroc < high <= 1.0
    more_low, more_high = volume_auroc_interval(rng.normal(0, 1, 120), rng.normal(1.5, 1, 120))
    assert more_high - more_low < 0.6 * (high - low)  # 8.6x the scans: about a third of the width
    # the AUROC is scikit-learn's statistic, ties counting half
    tied, against = np.array([0.0, 1.0, 1.0, 2.0]), np.array([2.0, 1.0, 1.0, 1.0])
    assert volume_auroc(tied, against) == roc_auc_score([0] * 4 + [1] * 4, [*tied, *against]) == 9.5 / 16
    assert volume_auroc(healthy, lesioned) == pytest.approx(roc_auc_score([0] * 14 + [1] * 14, [*healthy, *lesioned]))
    assert all(np.isnan(volume_auroc_interval(healthy[:0], lesioned)))  # no healthy scan: no interval
    # three copies of each lesioned scan say less than 42 scans would: counted as the 14 they are, the interval
    # is the one of 14 + 14 scores that rank alike
    copies = np.concatenate([lesioned] * 3)
    assert volume_auroc_interval(healthy, copies, n_lesioned=14) == pytest.approx((low, high))
    narrow_low, narrow_high = volume_auroc_interval(healthy, copies)
    assert narrow_high - narrow_low < high - low


def test_the_auroc_interval_does_not_collapse_when_every_pair_is_in_order():
    healthy = np.arange(14.0)
    low, high = volume_auroc_interval(healthy, healthy + 100)  # 14 + 14 scans in perfect order
    assert high == 1.0 and 0.8 < low < 0.9
    few_low, _ = volume_auroc_interval(healthy[:3], healthy[:3] + 100)  # 3 + 3 (the demo) say much less
    assert few_low < low - 0.2
    assert volume_auroc_interval(healthy, healthy - 100)[0] == 0.0  # and the mirror image


@pytest.mark.parametrize("shift", [1.5, 3.5])  # a middling AUROC (0.86), and one near 1 (0.993)
def test_the_auroc_interval_covers_the_true_auroc_about_95_times_in_100(shift):
    from scipy.stats import norm

    rng = np.random.default_rng(1)
    truth = norm.cdf(shift / np.sqrt(2))  # two unit normals shift apart
    covered = [low <= truth <= high for low, high in
               (volume_auroc_interval(rng.normal(0, 1, 14), rng.normal(shift, 1, 14)) for _ in range(800))]
    assert 0.92 <= np.mean(covered) <= 0.99


def test_more_lesioned_copies_extend_one_with_other_lesions_each_time():
    from vae3d.evaluation.anomaly import lesioned_copies

    grid = torch.stack(torch.meshgrid(*[torch.arange(24.0)] * 3, indexing="ij"))
    ball = (((grid - 11.5) ** 2).sum(0) < 9.0 ** 2).float() * 0.6  # a brain-like ball of tissue
    scans = torch.stack([ball, ball * 1.1])[:, None]
    one, one_masks = lesioned_copies(scans, seed=4)
    three, masks = lesioned_copies(scans, seed=4, copies=3)
    assert three.shape == (6, 1, 24, 24, 24) and masks.shape == three.shape
    assert torch.equal(three[:2], one) and torch.equal(masks[:2], one_masks)  # copy 0 is the one copy of before
    for k in (1, 2):  # each further copy of a scan carries lesions of its own draw
        assert masks[2 * k].any() and not torch.equal(masks[2 * k], masks[0])
    changed = (three - scans.repeat(3, 1, 1, 1, 1)).abs() > 1e-6
    assert (changed & masks.bool()).sum() > 0.5 * masks.sum()  # the masks say where the scans were changed
    with pytest.raises(ValueError, match="copies must be at least 1"):
        lesioned_copies(scans, seed=4, copies=0)
