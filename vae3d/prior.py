"""Priors over the latent grid: what ``generate synthetic`` samples before decoding.

The VAE is trained with a small KL weight (sharp reconstructions), so its aggregate posterior
is far from N(0, I): independent normal draws over the 4 x 32^3 grid decode to textured noise
with no anatomy. A prior fitted after training to the training scans' posterior means (an
ex-post density, Ghosh et al. 2020, "From variational to deterministic autoencoders") gives
samples the anatomy those scans share:

- ``normal``: N(0, I) on every latent element (the VAE's own prior; the baseline);
- ``lowrank``: a Gaussian with the training latents' mean, their ``rank`` leading principal
  directions (from an SVD) and a diagonal for what those leave out;
- ``diffusion``: a latent diffusion model (``vae3d.latent_diffusion``).

Every output index has its own random stream (``vae3d.seeding.output_generator``), so a
sample does not depend on which others are drawn with it. Priors are tensors only: they are
stored with the model version and loaded with ``weights_only=True``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from vae3d.intensity import as_state
from vae3d.latent_diffusion import LatentDiffusion
from vae3d.seeding import output_generator

KINDS = ("normal", "lowrank", "diffusion")


@dataclass(frozen=True)
class StandardNormal:
    """N(0, I) over a latent of ``latent_shape``."""

    latent_shape: tuple[int, ...]
    kind: str = "normal"
    refine: int = 0  # passes of a sample through the model after decoding (``inference.decode_refined``)
    intensity: torch.Tensor | None = None  # the samples' intensity map (``vae3d.intensity``), None: none

    def sample(self, indices: Sequence[int], seed: int, temperature: float = 1.0) -> torch.Tensor:
        """(len(indices), *latent_shape) on the CPU; ``temperature`` scales the spread."""
        z = torch.stack([torch.randn(self.latent_shape, generator=output_generator(seed, i)) for i in indices])
        return z * temperature

    def state(self) -> dict[str, torch.Tensor]:
        return {"kind": torch.tensor(0), "latent_shape": torch.tensor(self.latent_shape),
                "refine": torch.tensor(self.refine), **as_state(self.intensity)}


@dataclass(frozen=True)
class LowRankGaussian:
    """N(mean, B^T B + diag(residual_std^2)) over flattened latents: ``basis`` (rank, D) holds the
    leading principal directions scaled by their standard deviations."""

    mean: torch.Tensor  # (D,)
    basis: torch.Tensor  # (rank, D)
    residual_std: torch.Tensor  # (D,)
    latent_shape: tuple[int, ...]
    kind: str = "lowrank"
    refine: int = 0  # passes of a sample through the model after decoding (``inference.decode_refined``)
    intensity: torch.Tensor | None = None  # the samples' intensity map (``vae3d.intensity``), None: none
    spread: float = 1.0  # the registered temperature: samples are drawn at spread x the request's temperature

    @classmethod
    def fit(cls, latents: torch.Tensor, rank: int = 32, refine: int = 0, spread: float = 1.0) -> LowRankGaussian:
        """Fit to posterior means ``latents`` (n, *latent_shape) of the training scans.

        ``rank`` is capped at n - 1 (the directions n points span). The diagonal is each
        element's spread left after projecting onto those directions (zero where they explain
        everything, as when rank is n - 1).
        """
        n = len(latents)
        if n < 2:
            raise ValueError(f"a low-rank Gaussian needs at least 2 training latents, got {n}")
        if rank < 1:
            raise ValueError(f"prior rank must be >= 1, got {rank}")
        x = latents.detach().float().reshape(n, -1).cpu()
        mean = x.mean(0)
        centred = x - mean
        _, s, vh = torch.linalg.svd(centred, full_matrices=False)
        k = min(rank, n - 1)
        basis = vh[:k] * (s[:k] / math.sqrt(n - 1))[:, None]
        residual = centred - (centred @ vh[:k].T) @ vh[:k]
        return cls(mean, basis.contiguous(), residual.std(0), tuple(int(d) for d in latents.shape[1:]), refine=refine,
                   spread=spread)

    @property
    def rank(self) -> int:
        return len(self.basis)

    def sample(self, indices: Sequence[int], seed: int, temperature: float = 1.0) -> torch.Tensor:
        """(len(indices), *latent_shape) on the CPU; ``temperature`` scales the registered ``spread``
        around the mean (below 1: typical anatomy; 0: the mean latent)."""
        out, temperature = [], temperature * self.spread
        for i in indices:
            g = output_generator(seed, i)
            coeffs = torch.randn(self.rank, generator=g)
            noise = torch.randn(self.mean.shape, generator=g)
            out.append(self.mean + temperature * (coeffs @ self.basis + self.residual_std * noise))
        return torch.stack(out).reshape(len(out), *self.latent_shape)

    def direction(self, k: int, amount: float) -> torch.Tensor:
        """The mean latent moved ``amount`` standard deviations along principal direction ``k``
        (a traversal), (1, *latent_shape)."""
        return (self.mean + amount * self.basis[k]).reshape(1, *self.latent_shape)

    def state(self) -> dict[str, torch.Tensor]:
        return {"kind": torch.tensor(1), "latent_shape": torch.tensor(self.latent_shape), "mean": self.mean.half(),
                "basis": self.basis.half(), "residual_std": self.residual_std.half(),
                "refine": torch.tensor(self.refine), "spread": torch.tensor(self.spread), **as_state(self.intensity)}


Prior = StandardNormal | LowRankGaussian | LatentDiffusion


def fit_prior(kind: str, latents: torch.Tensor, rank: int = 32, refine: int = 0, spread: float = 1.0,
              **diffusion) -> Prior:
    """The prior ``kind`` (one of ``KINDS``) fitted to training posterior means (n, *latent_shape);
    its samples are passed through the model ``refine`` times after decoding; a low-rank prior
    draws at temperature ``spread`` (times a request's). ``diffusion``: the keyword arguments of
    ``LatentDiffusion.fit`` (its size, training budget, seed)."""
    if kind == "normal":
        return StandardNormal(tuple(int(d) for d in latents.shape[1:]), refine=refine)
    if kind == "lowrank":
        return LowRankGaussian.fit(latents, rank, refine, spread)
    if kind == "diffusion":
        return LatentDiffusion.fit(latents, refine=refine, **diffusion)
    raise ValueError(f"prior kind must be one of {KINDS}, got {kind!r}")


def prior_from_state(state: dict[str, torch.Tensor]) -> Prior:
    """A prior saved with ``state()`` (and ``vae3d.checkpoint.save_checkpoint``)."""
    shape = tuple(int(d) for d in state["latent_shape"].tolist())
    refine = int(state.get("refine", torch.tensor(0)))
    intensity = state.get("intensity")  # None: a prior stored before intensity maps existed
    if int(state["kind"]) == 0:
        return StandardNormal(shape, refine=refine, intensity=intensity)
    if int(state["kind"]) == 2:
        return dataclasses.replace(LatentDiffusion.from_state(state), intensity=intensity)
    return LowRankGaussian(state["mean"].float(), state["basis"].float(), state["residual_std"].float(), shape,
                           refine=refine, intensity=intensity, spread=float(state.get("spread", torch.tensor(1.0))))
