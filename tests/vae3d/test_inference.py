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
    err = lambda v: float((v - clean)[head].pow(2).mean())
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
    err = lambda v: float((v - clean).pow(2).mean().sqrt())
    assert err(out) < 0.3 * err(estimate)
    cubic = inference.cubic_resize(low, (32, 32, 32))
    assert err(out) < err(cubic), "the estimate's fine detail survives"
    odd = inference.back_project(estimate[..., :30], F.adaptive_avg_pool3d(clean[..., :30], (16, 16, 12)))
    assert odd.shape == (2, 1, 32, 32, 30)  # a non-integer ratio on one axis


def test_detail_gain_scales_the_models_detail_and_keeps_the_data():
    """An estimate with half the true detail: a gain of 2 restores it, 1 leaves the estimate,
    0 gives back-projected cubic B-spline; every gain still agrees with the low-resolution data."""
    import torch.nn.functional as F

    clean = _clean(size=32) * 0.8 + 0.1
    low = F.avg_pool3d(clean, 2)
    cubic_bp = inference.back_project(inference.cubic_resize(low, (32, 32, 32)), low)
    half = cubic_bp + 0.5 * (clean - cubic_bp)  # the right detail at half its amplitude
    err = lambda v: float((v - clean).pow(2).mean().sqrt())
    assert torch.equal(inference.amplify_detail(half, low, 1.0), half)
    assert torch.allclose(inference.amplify_detail(half, low, 0.0), cubic_bp, atol=1e-5)
    doubled = inference.amplify_detail(half, low, 2.0)
    assert err(doubled) < 0.1 * err(half)
    assert float((F.avg_pool3d(doubled, 2) - low).abs().max()) < 0.02


def test_shift_averaging_removes_the_stems_grid_dependence():
    """A 2x2x2 stem sees a voxel at one position in its patch: one voxel of shift changes a
    plain reconstruction beyond a shift, and much less the shift-averaged one (inside the
    volume: the convolutions' zero padding makes the border differ either way)."""
    from vae3d.model import VAE3D

    torch.manual_seed(0)
    model = VAE3D(input_size=16, channels=(8,), latent_channels=2, norm_num_groups=4, patch_size=2).eval()
    x = _clean(n=1, size=16)
    inner = (slice(None), slice(None), slice(4, 12), slice(4, 12), slice(4, 12))

    def shift_error(fn) -> float:
        moved = torch.roll(fn(model, torch.roll(x, 1, 2)), -1, 2)
        return float((moved - fn(model, x))[inner].abs().mean())

    plain, averaged = shift_error(inference.reconstruct), shift_error(inference.reconstruct_shift_averaged)
    assert averaged < 0.5 * plain, (averaged, plain)
    assert inference.reconstruct_shift_averaged(model, x).shape == x.shape


def test_a_mirror_averaged_restoration_commutes_with_mirroring_the_scan():
    """Averaged with the pass over the left-right mirrored scan, restoring the mirrored scan gives the
    mirrored restoration, which a single pass (an asymmetric network) does not; batching changes nothing."""
    from vae3d.model import VAE3D

    torch.manual_seed(0)
    model = VAE3D(input_size=16, channels=(8,), latent_channels=2, norm_num_groups=4, patch_size=2).eval()
    x, lr = _clean(n=1, size=16), inference.LEFT_RIGHT
    one, averaged = inference.reconstruct(model, x), inference.reconstruct(model, x, mirror=True)
    assert torch.allclose(inference.reconstruct(model, x.flip(lr), mirror=True).flip(lr), averaged, atol=1e-6)
    assert float((inference.reconstruct(model, x.flip(lr)).flip(lr) - one).abs().max()) > 1e-3
    both = inference.reconstruct_all(model, torch.cat([x, x.flip(lr)]), batch_size=1, mirror=True)
    assert torch.allclose(both[:1], averaged, atol=1e-6) and torch.allclose(both[1:].flip(lr), averaged, atol=1e-6)
