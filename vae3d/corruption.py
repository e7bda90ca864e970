"""Seeded corruptions for restoration training, applied to the encoder's input only.

The model is trained to map a corrupted volume back to its clean original (the loss
compares with the clean volume), so one network reconstructs, denoises, removes bias
fields and ringing, and restores lost resolution. Each corruption is drawn with its own
probability and strength from a numpy generator seeded per sample, so a batch replays
exactly after a resume. Tensors in, tensors out: (1, D, H, W) float in [0, 1].

The coarse-noise corruption follows Kascenas et al. (MIDL 2022): Gaussian noise drawn on a
coarse grid and upsampled, which teaches the model to repair whole blobs of tissue (what a
lesion looks like to it) rather than single noisy voxels.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import GibbsNoise, RandBiasField

from vae3d.config import RestorationConfig
from vae3d.preprocessing.augment import plain


def add_noise(x: torch.Tensor, std: float, kind: str, rng: np.random.Generator) -> torch.Tensor:
    """Rician (magnitude of a complex Gaussian) or Gaussian noise of ``std`` (fraction of the range)."""
    shape = (2, *x.shape) if kind == "rician" else tuple(x.shape)
    n = torch.from_numpy(rng.standard_normal(shape, dtype=np.float32)) * float(std)
    if kind == "rician":
        return torch.sqrt((x + n[0]) ** 2 + n[1] ** 2)
    return x + n


def degrade_resolution(x: torch.Tensor, factors: tuple[float, float, float]) -> torch.Tensor:
    """Average down by ``factors`` per axis, then trilinear back up: a low-resolution or
    thick-slice acquisition resampled onto the model's grid (what preprocessing does to one)."""
    size = tuple(x.shape[1:])
    small = tuple(max(1, round(s / f)) for s, f in zip(size, factors, strict=True))
    down = F.interpolate(x[None], size=small, mode="area")
    return F.interpolate(down, size=size, mode="trilinear", align_corners=False)[0]


def coarse_noise(x: torch.Tensor, std: float, grid: int, rng: np.random.Generator) -> torch.Tensor:
    """Gaussian noise drawn on a ``grid``^3 lattice, upsampled trilinearly, inside the head only."""
    n = torch.from_numpy(rng.standard_normal((1, 1, grid, grid, grid), dtype=np.float32)) * float(std)
    n = F.interpolate(n, size=tuple(x.shape[1:]), mode="trilinear", align_corners=False)[0]
    return x + n * (x > 0.05)


def corrupt(x: torch.Tensor, cfg: RestorationConfig, seed: int) -> torch.Tensor:
    """One corrupted copy of ``x`` (1, D, H, W); ``x`` itself is never modified.

    With probability ``1 - cfg.prob`` the copy is clean, so the model keeps learning the
    identity on clean scans. Otherwise each enabled corruption is applied with its own
    probability, in acquisition order (bias, resolution, ringing, coarse noise, noise).
    """
    rng = np.random.default_rng(int(seed) % (2**63))
    out = x.detach().clone().float()
    if rng.random() >= cfg.prob:
        return out
    if rng.random() < cfg.bias_prob:
        bias = RandBiasField(degree=3, coeff_range=(0.0, cfg.bias_max), prob=1.0)
        bias.set_random_state(seed=int(rng.integers(2**31)))
        out = plain(bias(out)).float()
    if rng.random() < cfg.lowres_prob:
        f = float(rng.uniform(*cfg.lowres_factor))
        if rng.random() < cfg.thick_slice_fraction:  # one axis, as a thick-slice 2D acquisition
            factors = [1.0, 1.0, 1.0]
            factors[int(rng.integers(3))] = f
        else:
            factors = [f, f, f]
        out = degrade_resolution(out, tuple(factors))
    if rng.random() < cfg.gibbs_prob:
        out = plain(GibbsNoise(alpha=float(rng.uniform(0.0, cfg.gibbs_max)))(out)).float()
    if rng.random() < cfg.coarse_prob:
        out = coarse_noise(out, float(rng.uniform(0.0, cfg.coarse_std)), cfg.coarse_grid, rng)
    if rng.random() < cfg.noise_prob:
        out = add_noise(out, float(rng.uniform(*cfg.noise_std)), cfg.noise_kind, rng)
    return out.clamp_(0.0, 1.0)
