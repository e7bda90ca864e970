"""VAE losses, kept outside the model: reconstruction, KL with free bits, KL annealing."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from vae3d.metrics import ssim_per_volume


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor, free_bits: float = 0.0) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) in nats per sample, summed over latent elements, mean over batch.

    Closed form for diagonal Gaussians: 0.5 * sum(mu^2 + exp(logvar) - 1 - logvar).

    Free bits (Kingma et al., 2016) against posterior collapse: each latent *channel*
    (axis 1) is charged at least ``free_bits`` nats per latent position, so the optimiser
    gains nothing by pushing a channel's information below that floor.

    Args:
        mu, logvar: (B, C, ...) posterior parameters.
        free_bits: nats per latent element (0 disables).

    Returns:
        scalar tensor.
    """
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)
    if free_bits <= 0:
        return kl.flatten(1).sum(1).mean()
    per_channel = kl.mean(0).flatten(1).sum(1)  # (C,), nats per channel, batch-averaged
    positions = kl[0, 0].numel()
    return per_channel.clamp(min=free_bits * positions).sum()


def kl_weight(
    step: int,
    beta: float,
    schedule: Literal["constant", "linear", "cyclical"] = "linear",
    warmup_steps: int = 500,
    cycle_steps: int = 1000,
) -> float:
    """The KL weight at ``step``.

    - ``constant``: ``beta`` throughout.
    - ``linear``: ramps from 0 to ``beta`` over ``warmup_steps``, then holds.
    - ``cyclical`` (Fu et al., 2019): in each cycle of ``cycle_steps`` it ramps from 0 to
      ``beta`` over the first half and holds for the second half.
    """
    if schedule == "constant":
        return float(beta)
    if schedule == "linear":
        return float(beta) * min(1.0, step / max(1, warmup_steps))
    if schedule == "cyclical":
        phase = (step % max(1, cycle_steps)) / max(1, cycle_steps)
        return float(beta) * min(1.0, 2.0 * phase)
    raise ValueError(f"unknown KL schedule {schedule!r}; use 'constant', 'linear' or 'cyclical'")


class VAELoss(nn.Module):
    """recon + ssim_weight * (1 - SSIM) + kl_weight * KL / voxels.

    The SSIM term is MONAI's Gaussian SSIM (window 11, sigma 1.5) computed by
    ``vae3d.metrics.ssim_per_volume``: the same value and gradient as ``monai.losses.SSIMLoss``,
    without its dense 11^3 window (which cost 10x a training step on a CPU). KL is divided by the number of input voxels
    so that ``beta`` means the same thing at 64^3 and 128^3 (the reconstruction term is a
    per-voxel mean).
    """

    def __init__(self, recon: Literal["l1", "mse"] = "l1", ssim_weight: float = 0.0, free_bits: float = 0.0):
        super().__init__()
        if recon not in ("l1", "mse"):
            raise ValueError(f"recon must be 'l1' or 'mse', got {recon!r}")
        self.recon, self.ssim_weight, self.free_bits = recon, float(ssim_weight), float(free_bits)

    def forward(
        self, recon: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, kl_w: float
    ) -> dict[str, torch.Tensor]:
        rec = (recon - x).abs().mean() if self.recon == "l1" else (recon - x).pow(2).mean()
        kl = kl_divergence(mu.float(), logvar.float(), self.free_bits)
        total = rec + kl_w * kl / math.prod(x.shape[1:])
        out = {"recon": rec, "kl": kl}
        if self.ssim_weight > 0:
            s = 1.0 - ssim_per_volume(recon, x).mean()
            total = total + self.ssim_weight * s
            out["ssim_loss"] = s
        out["loss"] = total
        return out
