"""Inference helpers: the noise estimate and the fusion of an input with its restoration."""

from __future__ import annotations

import numpy as np
import torch

from vae3d import inference
from vae3d.evaluation.denoising import add_rician
from vae3d.sample_data import phantom


def _clean(n: int = 2, size: int = 32) -> torch.Tensor:
    vols = [phantom((size,) * 3, seed=s, noise=0.0)[0] for s in range(n)]
    return torch.from_numpy(np.stack(vols)[:, None] / 1.2).float().clamp(0, 1)


def test_noise_sigma_tracks_the_added_noise():
    clean = _clean(size=64)  # the phantom's edges inflate it at small sizes; real scans are smoother
    assert float(inference.noise_sigma(clean).max()) < 0.01
    previous = torch.zeros(2)
    for sigma in (0.03, 0.06, 0.12):
        est = inference.noise_sigma(add_rician(clean, sigma, seed=1))
        assert torch.allclose(est, torch.full_like(est, sigma), rtol=0.4), (sigma, est)
        assert bool((est > previous).all())
        previous = est


def test_fusion_keeps_a_clean_input_and_restores_a_noisy_one():
    clean = _clean()
    blurred = clean * 0.8  # a restoration with a known, large error
    head = clean > 0.15
    rmse = float((blurred - clean)[head].pow(2).mean().sqrt())  # as restoration_error measures it
    kept = inference.fuse(clean, blurred, rmse)
    assert float((kept - clean).abs().mean()) < 0.1 * float((blurred - clean).abs().mean())
    noisy = add_rician(clean, 0.2, seed=2)
    fused = inference.fuse(noisy, clean, 0.01)  # a near-perfect restoration of a very noisy input
    assert float((fused - clean).abs().mean()) < 0.2 * float((noisy - clean).abs().mean())
    err = lambda v: float((v - clean)[head].pow(2).mean())  # noqa: E731
    noisy = add_rician(clean, rmse, seed=3)  # noise as large as the restoration's error
    mid = inference.fuse(noisy, blurred, rmse)
    assert err(mid) < min(err(noisy), err(blurred))


def test_back_projection_agrees_with_the_low_resolution_data_and_keeps_the_estimates_detail():
    """An estimate with the right fine detail but a wrong low-frequency shading: back-projection
    removes the shading (the data sees it) and keeps the detail (the data cannot)."""
    import torch.nn.functional as F

    clean = _clean(size=32) * 0.8 + 0.1  # inside (0, 1): the clamp stays out of the way
    low = F.avg_pool3d(clean, 2)
    ramp = torch.linspace(-0.1, 0.1, 32).view(1, 1, 32, 1, 1)
    estimate = clean + ramp
    out = inference.back_project(estimate, low)
    assert out.shape == clean.shape
    assert float((F.avg_pool3d(out, 2) - low).abs().max()) < 0.01
    err = lambda v: float((v - clean).pow(2).mean().sqrt())  # noqa: E731
    assert err(out) < 0.3 * err(estimate)
    cubic = inference.cubic_resize(low, (32, 32, 32))
    assert err(out) < err(cubic), "the estimate's fine detail survives"
    odd = inference.back_project(estimate[..., :30], F.adaptive_avg_pool3d(clean[..., :30], (16, 16, 12)))
    assert odd.shape == (2, 1, 32, 32, 30)  # a non-integer ratio on one axis
