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
