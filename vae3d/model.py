"""A 3D convolutional variational autoencoder for brain MRI.

Where the compute goes decides what a CPU can learn in minutes: a strided "patchify" stem
(2x2x2 or 4x4x4) takes the input to a lower resolution at once, residual blocks (MONAI's
``AEKLResBlock``: GroupNorm, SiLU, 3x3x3 convs) work from there down, and the latent is a
spatial grid (the pipeline's defaults, ``vae3d.config.ModelConfig``: 4 channels at 1/2
resolution after a 2x2x2 stem) so anatomy keeps its position. A flat latent vector is an option for
embedding-style use.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from monai.networks.blocks import Convolution
from monai.networks.nets.autoencoderkl import AEKLDownsample, AEKLResBlock
from torch import nn

from vae3d.checkpoint import load_checkpoint


def _conv(cin: int, cout: int, kernel: int = 3) -> Convolution:
    return Convolution(3, cin, cout, strides=1, kernel_size=kernel, padding=kernel // 2, conv_only=True)


class _Upsample(nn.Module):
    """Nearest-neighbour x2 then a 3x3x3 conv (no checkerboard artefacts of transposed convs)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = _conv(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(nn.functional.interpolate(x, scale_factor=2.0, mode="nearest"))


def pixel_shuffle_3d(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C * p^3, D, H, W) -> (B, C, D*p, H*p, W*p): channel ``c * p^3 + i * p^2 + j * p + k``
    becomes voxel ``(d*p + i, h*p + j, w*p + k)`` of output channel ``c``.

    The shuffle copies the voxels once anyway; it lays them out first-axis-fastest (the
    result is a transposed view of that buffer), NIfTI's order, so writing an output
    volume needs no second, strided copy. Element-wise ops keep the layout.
    """
    b, cp, d, h, w = x.shape
    c = cp // p**3
    x = x.reshape(b, c, p, p, p, d, h, w).permute(0, 1, 7, 4, 6, 3, 5, 2)
    return x.reshape(b, c, w * p, h * p, d * p).permute(0, 1, 4, 3, 2)


class _Unpatchify(nn.Module):
    """(B, C, g, g, g) -> (B, out, g*p, g*p, g*p): a 3x3x3 conv to out * p^3 channels, then
    the inverse of the patchify stem (``pixel_shuffle_3d``)."""

    def __init__(self, channels: int, out_channels: int, patch: int):
        super().__init__()
        self.patch = patch
        self.conv = _conv(channels, out_channels * patch**3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pixel_shuffle_3d(self.conv(x), self.patch)


class VAE3D(nn.Module):
    """3D convolutional VAE.

    Args:
        input_size: edge length of the cubic input (D = H = W); must be divisible by
            ``patch_size * 2 ** (len(channels) - 1)``.
        in_channels: image channels (1 for a single MRI contrast).
        channels: feature channels per level; level 0 runs at 1/patch_size of the input
            resolution (after the patchify stem) and each further level halves it again.
        latent_channels: channels of the spatial latent grid.
        num_res_blocks: residual blocks per level in the encoder and in the decoder.
        norm_num_groups: GroupNorm groups; every entry of ``channels`` must be divisible by it.
        flat_latent: if set, the latent is a vector of this size instead of a grid.
        patch_size: stride (and kernel) of the stem: 4 or 2.
        logvar_init: initial bias of the posterior's log-variance (0: sigma 1, the prior's).

    Shapes:
        x: (B, in_channels, S, S, S) with S = input_size
        latent grid: (B, latent_channels, G, G, G), G = S / (patch_size * 2**(L-1)), L = len(channels);
        flat latent: (B, flat_latent)

    Raises:
        ValueError: on an inconsistent combination of the above.
    """

    def __init__(
        self,
        input_size: int = 64,
        in_channels: int = 1,
        channels: Sequence[int] = (32, 64),
        latent_channels: int = 8,
        num_res_blocks: int = 1,
        norm_num_groups: int = 8,
        flat_latent: int | None = None,
        norm_eps: float = 1e-6,
        patch_size: int = 4,
        logvar_init: float = 0.0,
    ) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if not channels:
            raise ValueError("channels must name at least one level, e.g. (32, 48, 64)")
        if patch_size not in (2, 4):
            raise ValueError(f"patch_size must be 2 or 4, got {patch_size}")
        factor = patch_size * 2 ** (len(channels) - 1)
        if input_size % factor:
            raise ValueError(
                f"input_size={input_size} is not divisible by patch_size * 2**(levels-1)={factor}; "
                f"use a multiple of {factor} (preprocess target_shape) or fewer levels"
            )
        bad = [c for c in channels if c % norm_num_groups]
        if bad:
            raise ValueError(
                f"channels {bad} are not divisible by norm_num_groups={norm_num_groups}; "
                "choose channels that are multiples of the group count"
            )
        if min(latent_channels, in_channels, num_res_blocks) < 1:
            raise ValueError("latent_channels, in_channels and num_res_blocks must be >= 1")
        if flat_latent is not None and flat_latent < 1:
            raise ValueError(f"flat_latent must be >= 1 or None, got {flat_latent}")
        self._hparams = {
            "input_size": input_size, "in_channels": in_channels, "channels": list(channels),
            "latent_channels": latent_channels, "num_res_blocks": num_res_blocks,
            "norm_num_groups": norm_num_groups, "flat_latent": flat_latent, "norm_eps": norm_eps,
            "patch_size": patch_size, "logvar_init": logvar_init,
        }
        self.input_size, self.in_channels, self.channels = input_size, in_channels, channels
        self.latent_channels, self.flat_latent = latent_channels, flat_latent
        self.grid = input_size // factor
        res = lambda cin, cout: AEKLResBlock(3, cin, norm_num_groups, norm_eps, cout)

        enc: list[nn.Module] = [
            Convolution(3, in_channels, channels[0], strides=patch_size, kernel_size=patch_size, padding=0,
                        conv_only=True)
        ]
        for level, ch in enumerate(channels):
            cin = channels[level - 1] if level else channels[0]
            enc += [res(cin if i == 0 else ch, ch) for i in range(num_res_blocks)]
            enc.append(AEKLDownsample(3, ch) if level < len(channels) - 1 else nn.Identity())
        enc += [nn.GroupNorm(norm_num_groups, channels[-1], eps=norm_eps), nn.SiLU(),
                _conv(channels[-1], 2 * latent_channels)]
        self.encoder = nn.Sequential(*[m for m in enc if not isinstance(m, nn.Identity)])

        dec: list[nn.Module] = [_conv(latent_channels, channels[-1])]
        rev = channels[::-1]
        for level, ch in enumerate(rev):
            cin = rev[level - 1] if level else rev[0]
            dec += [res(cin if i == 0 else ch, ch) for i in range(num_res_blocks)]
            if level < len(rev) - 1:
                dec.append(_Upsample(ch))
        # back to full resolution by the stem's mirror: a 3x3x3 conv to in_channels * p^3
        # channels, then a pixel shuffle (each channel group becomes one voxel of the p^3
        # patch). A strided transposed conv prints a checkerboard into every output, and a
        # trilinear upsample + full-resolution conv spent a fifth of each step on memory-bound
        # work at 64^3 for almost no FLOPs (BENCHMARKS.md).
        dec += [
            nn.GroupNorm(norm_num_groups, channels[0], eps=norm_eps), nn.SiLU(),
            _Unpatchify(channels[0], in_channels, patch_size),
        ]
        self.decoder = nn.Sequential(*dec)

        n_grid = latent_channels * self.grid**3
        if flat_latent is not None:
            self.to_flat = nn.Linear(2 * n_grid, 2 * flat_latent)
            self.from_flat = nn.Linear(flat_latent, n_grid)
        # the posterior starts narrow (sigma = exp(logvar_init / 2)) instead of at the prior's
        # sigma 1, whose noise on every latent blurs the first hundreds of steps
        with torch.no_grad():
            if flat_latent is None:
                self.encoder[-1].conv.bias[latent_channels:].fill_(float(logvar_init))
            else:
                self.to_flat.bias[flat_latent:].fill_(float(logvar_init))

    @property
    def device(self) -> torch.device:
        """Where the weights are (inputs are moved here by ``vae3d.inference`` and ``vae3d.generation``)."""
        return next(self.parameters()).device

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one sample's latent (without the batch axis)."""
        if self.flat_latent is not None:
            return (self.flat_latent,)
        return (self.latent_channels, self.grid, self.grid, self.grid)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, S, S, S) -> (mu, logvar), each (B, *latent_shape)."""
        h = self.encoder(x)
        if self.flat_latent is not None:
            h = self.to_flat(h.flatten(1))
        mu, logvar = h.chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)

    @staticmethod
    def sample_posterior(
        mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Reparameterization trick: z = mu + sigma * eps, eps ~ N(0, I); differentiable in mu, logvar."""
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + torch.exp(0.5 * logvar) * eps

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, *latent_shape) -> (B, C, S, S, S)."""
        if self.flat_latent is not None:
            z = self.from_flat(z).view(-1, self.latent_channels, self.grid, self.grid, self.grid)
        return self.decoder(z)

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training pass: (reconstruction from a posterior sample, mu, logvar)."""
        mu, logvar = self.encode(x)
        return self.decode(self.sample_posterior(mu, logvar, generator)), mu, logvar

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic reconstruction from the posterior mean: (B, C, S, S, S)."""
        return self.decode(self.encode(x)[0])

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0
    ) -> torch.Tensor:
        """``n`` volumes decoded from the prior N(0, temperature^2 I): (n, C, S, S, S)."""
        p = next(self.parameters())
        z = torch.randn((n, *self.latent_shape), generator=generator, device=p.device, dtype=p.dtype)
        return self.decode(z * temperature)

    def hparams(self) -> dict:
        """Constructor arguments (primitives): what a checkpoint needs to rebuild the model."""
        return dict(self._hparams)


def load_model(path: Path, map_location: str | torch.device = "cpu") -> VAE3D:
    """Rebuild a model from a checkpoint (``best.pt``/``last.pt``, or registered weights) in eval
    mode; loads with ``weights_only=True``."""
    state = load_checkpoint(path, map_location)
    model = VAE3D(**state["hparams"])
    model.load_state_dict(state["model"])
    return model.eval()
