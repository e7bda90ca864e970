"""The synthetic scans' intensity map: one monotone map that removes a sampler's bias and keeps
each sample's own anatomy and tissue proportions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vae3d.evaluation.synthesis import tissue_fractions
from vae3d.intensity import BRAIN, apply_map, fit_map, landmarks


def _scans(n: int, wm: float, blur: float, seed: int) -> torch.Tensor:
    """n volumes: background, a brain of CSF (0.25) / GM (0.55) / WM (``wm``) bands with
    per-scan proportions, pulled towards the middle intensity by ``blur`` (a blurrier sampler)."""
    g = torch.Generator().manual_seed(seed)
    out = torch.zeros(n, 1, 12, 12, 12)
    for i in range(n):
        u = torch.rand(10, 10, 10, generator=g)
        csf_share = 0.1 + 0.1 * i / max(1, n - 1)  # each scan its own proportion of CSF
        brain = torch.where(u < csf_share, 0.25, torch.where(u < 0.5, 0.55, wm))
        out[i, 0, 1:11, 1:11, 1:11] = brain + blur * (0.55 - brain)
    return out


def test_the_map_takes_the_samplers_intensities_onto_the_real_scans():
    real, samples = _scans(8, wm=0.85, blur=0.0, seed=0), _scans(8, wm=0.85, blur=0.7, seed=1)
    knots = fit_map(samples, real)
    mapped = apply_map(samples, knots)
    gap = lambda a: max(abs(a[k][0] - b[0]) for k, b in tissue_fractions(real).items())
    assert gap(tissue_fractions(samples)) > 0.3 and gap(tissue_fractions(mapped)) < 0.05
    ends = [0, 4, -1]  # percentiles 1, 20, 99: CSF, GM and WM intensity again
    assert np.allclose(landmarks(mapped)[ends], landmarks(real)[ends], atol=0.02)
    # background untouched; the map is monotone, so each scan's voxel order (its anatomy) is kept
    assert torch.equal(mapped[samples <= BRAIN], samples[samples <= BRAIN])
    flat_in, flat_out = samples[0].flatten(), mapped[0].flatten()
    assert bool((flat_out[flat_in.argsort()].diff() >= -1e-6).all())
    # the same map for every sample: their own tissue proportions still differ
    csf = [float(((m > BRAIN) & (m < 0.4)).sum() / (m > BRAIN).sum()) for m in mapped]
    assert csf[-1] - csf[0] == pytest.approx(0.1, abs=0.03)


def test_no_brain_voxel_is_a_clear_error():
    with pytest.raises(ValueError, match="nothing to fit"):
        fit_map(torch.zeros(2, 1, 4, 4, 4), torch.ones(2, 1, 4, 4, 4) * 0.5)
