"""A latent diffusion prior (Pinaya et al. 2022; Rombach et al. 2022): MONAI's
``DiffusionModelUNet`` trained to denoise the training scans' posterior means, sampled with
MONAI's ``DDIMScheduler``.

The latents are standardised first: the mean training latent is subtracted (the network
learns how scans differ from the average brain, not the brain) and the rest divided by one
global scale, as latent diffusion does. Each 2x2x2 block of the latent grid is folded into
channels (4 x 32^3 -> 32 x 16^3): the UNet then runs at 16^3, about 5x faster per step on a
CPU for the same width (BENCHMARKS.md, "Latent priors"). An exponential moving average of the
weights is what samples (short trainings depend on it).

Sampling is deterministic given the seed: each output index draws its starting noise from its
own stream (``vae3d.seeding.output_generator``) and DDIM with eta 0 adds no noise after that.
``temperature`` scales the starting noise.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from vae3d.intensity import as_state
from vae3d.seeding import output_generator

TRAIN_TIMESTEPS = 1000
SCHEDULE = {"schedule": "scaled_linear_beta", "beta_start": 0.0015, "beta_end": 0.0195}  # MONAI's LDM tutorials
PREDICTION = "v_prediction"  # an undertrained v-model falls back to the mean latent; an eps-model diverges


def fold(z: torch.Tensor) -> torch.Tensor:
    """(B, C, D, H, W) -> (B, 8C, D/2, H/2, W/2): each 2x2x2 block into channels."""
    b, c, d, h, w = z.shape
    z = z.reshape(b, c, d // 2, 2, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 7, 2, 4, 6)
    return z.reshape(b, c * 8, d // 2, h // 2, w // 2)


def unfold(z: torch.Tensor) -> torch.Tensor:
    """The inverse of ``fold``."""
    b, c8, d, h, w = z.shape
    z = z.reshape(b, c8 // 8, 2, 2, 2, d, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
    return z.reshape(b, c8 // 8, d * 2, h * 2, w * 2)


def build_unet(channels: int, widths: Sequence[int]):
    from monai.networks.nets import DiffusionModelUNet

    widths = tuple(int(c) for c in widths)
    return DiffusionModelUNet(spatial_dims=3, in_channels=channels, out_channels=channels, channels=widths,
                              attention_levels=(False,) * len(widths), num_res_blocks=1,
                              norm_num_groups=math.gcd(*widths, 16), num_head_channels=widths[-1])


@dataclass(frozen=True)
class LatentDiffusion:
    """The trained denoiser (its EMA weights), the latent standardisation and how to sample."""

    unet: torch.nn.Module
    mean: torch.Tensor  # (*latent_shape)
    scale: float
    widths: tuple[int, ...]
    latent_shape: tuple[int, ...]
    sampling_steps: int = 25
    kind: str = "diffusion"
    refine: int = 0  # passes of a sample through the model after decoding (``inference.decode_refined``)
    intensity: torch.Tensor | None = None  # the samples' intensity map (``vae3d.intensity``), None: none

    @classmethod
    def fit(cls, latents: torch.Tensor, *, widths: Sequence[int] = (48, 96, 96), train_steps: int = 3000,
            max_minutes: float | None = None, batch_size: int = 8, lr: float = 5e-4, ema: float = 0.995,
            sampling_steps: int = 25, seed: int = 0, refine: int = 0, device: str | torch.device = "cpu",
            progress: Callable[[int, float], None] | None = None) -> LatentDiffusion:
        """Train on posterior means ``latents`` (n, C, D, H, W) with even D, H, W for ``train_steps``
        optimiser steps or ``max_minutes``, whichever ends first, on ``device`` (the prior is
        returned on the CPU); ``progress(step, loss)`` every 100 steps."""
        from monai.networks.schedulers import DDPMScheduler

        if latents.ndim != 5 or any(s % 2 for s in latents.shape[2:]):
            raise ValueError(f"latent diffusion needs (n, C, D, H, W) latents with even D, H, W; got "
                             f"{tuple(latents.shape)}")
        if len(latents) < 2:
            raise ValueError(f"a latent diffusion prior needs at least 2 training latents, got {len(latents)}")
        x = latents.detach().float().cpu()
        mean = x.mean(0)
        scale = float((x - mean).std())
        data = fold((x - mean) / scale).to(device)
        g = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            unet = build_unet(data.shape[1], widths).to(device)
        averaged = copy.deepcopy(unet).requires_grad_(False)
        scheduler = DDPMScheduler(num_train_timesteps=TRAIN_TIMESTEPS, prediction_type=PREDICTION, **SCHEDULE)
        opt = torch.optim.AdamW(unet.parameters(), lr=lr)
        deadline = time.monotonic() + max_minutes * 60 if max_minutes else math.inf
        unet.train()
        for step in range(train_steps):
            if time.monotonic() > deadline:
                break
            batch = data[torch.randint(len(data), (batch_size,), generator=g).to(device)]
            noise = torch.randn(batch.shape, generator=g).to(device)
            t = torch.randint(0, TRAIN_TIMESTEPS, (batch_size,), generator=g).to(device)
            target = scheduler.get_velocity(batch, noise, t)
            loss = torch.nn.functional.mse_loss(unet(scheduler.add_noise(batch, noise, t), t), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
            opt.step()
            decay = min(ema, (1 + step) / (10 + step))  # warm-up: the average starts near the weights
            with torch.no_grad():
                for a, p in zip(averaged.parameters(), unet.parameters(), strict=True):
                    a.lerp_(p, 1 - decay)
            if progress and step % 100 == 0:
                progress(step, loss.item())
        return cls(averaged.cpu().eval(), mean, scale, tuple(int(w) for w in widths),
                   tuple(int(d) for d in latents.shape[1:]), sampling_steps, refine=refine)

    def sample(self, indices: Sequence[int], seed: int, temperature: float = 1.0) -> torch.Tensor:
        """(len(indices), *latent_shape) on the CPU, by ``sampling_steps`` DDIM steps (eta 0).
        Each index runs alone: a batched convolution rounds differently, and a sample must not
        depend on which others share its batch."""
        from monai.networks.schedulers import DDIMScheduler

        scheduler = DDIMScheduler(num_train_timesteps=TRAIN_TIMESTEPS, clip_sample=False, prediction_type=PREDICTION,
                                  **SCHEDULE)
        scheduler.set_timesteps(self.sampling_steps)  # its steps keep no state: one serves every sample
        return torch.cat([self._sample_one(i, seed, temperature, scheduler) for i in indices])

    @torch.no_grad()
    def _sample_one(self, index: int, seed: int, temperature: float, scheduler) -> torch.Tensor:
        p = next(self.unet.parameters())
        folded = (1, self.latent_shape[0] * 8, *(s // 2 for s in self.latent_shape[1:]))
        x = (torch.randn(folded, generator=output_generator(seed, index)) * temperature).to(p.device, p.dtype)
        for t in scheduler.timesteps:
            x, _ = scheduler.step(self.unet(x, torch.full((1,), int(t), device=p.device, dtype=torch.long)), int(t), x)
        return unfold(x.float().cpu()) * self.scale + self.mean

    def state(self) -> dict[str, torch.Tensor]:
        return {"kind": torch.tensor(2), "latent_shape": torch.tensor(self.latent_shape), "mean": self.mean.half(),
                "scale": torch.tensor(self.scale), "widths": torch.tensor(self.widths),
                "sampling_steps": torch.tensor(self.sampling_steps), "refine": torch.tensor(self.refine),
                **as_state(self.intensity),
                **{f"unet.{k}": v for k, v in self.unet.state_dict().items()}}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> LatentDiffusion:
        shape = tuple(int(d) for d in state["latent_shape"].tolist())
        widths = tuple(int(w) for w in state["widths"].tolist())
        unet = build_unet(shape[0] * 8, widths)
        unet.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("unet.")})
        return cls(unet.eval(), state["mean"].float(), float(state["scale"]), widths, shape,
                   int(state["sampling_steps"]), refine=int(state["refine"]))
