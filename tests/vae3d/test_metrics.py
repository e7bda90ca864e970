"""The separable SSIM gives MONAI's SSIMMetric values."""

from __future__ import annotations

import numpy as np
import torch

from vae3d.metrics import psnr_ssim, ssim_per_volume
from vae3d.sample_data import phantom


def test_separable_ssim_equals_monai_ssim_metric():
    clean = torch.from_numpy(np.stack([phantom((24, 24, 24), seed=s)[0] for s in range(3)])[:, None] / 1.2).float()
    noisy = (clean + 0.05 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    _, monai_ssim = psnr_ssim(clean.shape[2:])
    want = monai_ssim(noisy, clean).flatten()
    got = ssim_per_volume(noisy, clean)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)
    assert float(ssim_per_volume(clean, clean).min()) > 0.9999
    # small volumes shrink the window the same way
    _, small = psnr_ssim((8, 8, 8))
    torch.testing.assert_close(ssim_per_volume(noisy[..., :8, :8, :8], clean[..., :8, :8, :8]),
                               small(noisy[..., :8, :8, :8], clean[..., :8, :8, :8]).flatten(), atol=2e-5, rtol=1e-4)
