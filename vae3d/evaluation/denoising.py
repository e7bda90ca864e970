"""Denoising: Rician noise at a fraction of the intensity range; the VAE vs Gaussian
smoothing and non-local means, both tuned on the validation split."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from monai.transforms import GaussianSmooth, RandRicianNoise
from skimage.restoration import denoise_nl_means

from vae3d.metrics import psnr_ssim
from vae3d.preprocessing.augment import plain
from vae3d.seeding import derive_seed


def add_rician(volumes: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    """Rician noise of std ``sigma`` (fraction of the [0, 1] range), seeded per volume."""
    out = []
    for i, v in enumerate(volumes):
        t = RandRicianNoise(prob=1.0, std=sigma, sample_std=False)
        t.set_random_state(seed=derive_seed(seed, "rician", i))
        out.append(plain(t(v)).float())
    return torch.stack(out)


def scores(pred: torch.Tensor, clean: torch.Tensor) -> dict[str, float]:
    """MONAI PSNR and SSIM (data range 1) of (B, 1, D, H, W) predictions."""
    psnr, ssim = psnr_ssim(clean.shape[2:])
    psnr(pred.clamp(0, 1), clean)
    ssim(pred.clamp(0, 1), clean)
    return {"psnr": float(psnr.aggregate()), "ssim": float(ssim.aggregate())}


def gaussian(noisy: torch.Tensor, sigma: float) -> torch.Tensor:
    smooth = GaussianSmooth(sigma=sigma)
    return torch.stack([plain(smooth(v)).float() for v in noisy])


def nl_means(noisy: torch.Tensor, h: float) -> torch.Tensor:
    out = [denoise_nl_means(v[0].numpy(), h=h, patch_size=3, patch_distance=3, fast_mode=True) for v in noisy]
    return torch.from_numpy(np.stack(out)[:, None].astype(np.float32))


def tune(method: Callable[[torch.Tensor, float], torch.Tensor], noisy: torch.Tensor, clean: torch.Tensor,
         grid: Sequence[float]) -> float:
    """The parameter of ``method`` with the best validation PSNR."""
    return max(grid, key=lambda p: scores(method(noisy, p), clean)["psnr"])
