"""Sampling and latent-space augmentation with per-output seeds.

Every output index has its own random stream (seeded from the request seed and the index),
so output ``i`` is the same whether it is generated alone, in a batch, or in a re-run
that skips the outputs already on disk. The random numbers are drawn on the CPU whatever
the model's device, so a GPU decodes the same latents as the CPU; results come back on
the CPU.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from vae3d.inference import render
from vae3d.intensity import fit_map
from vae3d.model import VAE3D
from vae3d.prior import Prior, StandardNormal
from vae3d.seeding import derive_seed, output_generator


def _normal(shape: Sequence[int], seed: int, index: int) -> torch.Tensor:
    return torch.randn(tuple(shape), generator=output_generator(seed, index))


@torch.no_grad()
def synthesize(model: VAE3D, indices: Sequence[int], seed: int, temperature: float = 1.0,
               prior: Prior | None = None) -> torch.Tensor:
    """Decode samples of ``prior`` (the model's N(0, I) when None: a model registered without a
    fitted prior) for the given output indices, refined through the model as many times as the
    prior says: (len(indices), 1, S, S, S) in [0, 1], on the CPU."""
    p = next(model.parameters())
    prior = prior or StandardNormal(model.latent_shape)
    z = prior.sample(indices, seed, temperature).to(p.device, p.dtype)
    return render(model, z, prior)


def calibrate_intensity(model: VAE3D, prior: Prior, real: torch.Tensor, n: int = 32, seed: int = 0) -> Prior:
    """``prior`` with the intensity map that takes ``n`` of its samples (temperature 1, no map; a
    stream of their own, so no sample ``generate synthetic`` makes with ``seed`` is among them) onto
    the intensities of the ``real`` (training) scans (``vae3d.intensity.fit_map``)."""
    plain, own = dataclasses.replace(prior, intensity=None), derive_seed(seed, "intensity")
    samples = torch.cat([synthesize(model, chunk.tolist(), own, prior=plain) for chunk in torch.arange(n).split(8)])
    return dataclasses.replace(prior, intensity=fit_map(samples, real))


@torch.no_grad()
def latent_variants(
    model: VAE3D, x: torch.Tensor, variant_indices: Sequence[int], seed: int, scale: float = 0.5,
    prior: Prior | None = None,
) -> torch.Tensor:
    """Variants of one input: its posterior mean moved ``scale`` along random directions.

    With a low-rank ``prior`` the move is a draw of the prior's principal directions (the
    anatomy the training scans vary in), ``scale`` in its standard deviations; without one it is
    posterior noise, ``mu + scale * sigma * eps`` (0 gives the reconstruction, 1 a posterior sample).

    Args:
        x: (1, 1, S, S, S) preprocessed input.

    Returns:
        (len(variant_indices), 1, S, S, S) in [0, 1], on the CPU.
    """
    mu, logvar = model.encode(x.to(model.device))
    if getattr(prior, "basis", None) is not None:
        moves = torch.stack([torch.randn(prior.rank, generator=output_generator(seed, v)) @ prior.basis
                             for v in variant_indices]).reshape(len(variant_indices), *mu.shape[1:])
        z = mu + scale * moves.to(mu.device, mu.dtype)
    else:
        sigma = torch.exp(0.5 * logvar)
        z = torch.cat([mu + scale * sigma * _normal(mu.shape, seed, v).to(mu.device) for v in variant_indices])
    return model.decode(z).float().clamp_(0.0, 1.0).cpu()


def quantize(volumes: torch.Tensor) -> torch.Tensor:
    """[0, 1] volumes as the int16 steps ``vae3d.nifti.quantize`` gives (scl_slope 1/32767),
    computed by torch on the calling thread: cheaper there than in the writer."""
    from vae3d.nifti import INT16_SCALE  # here: sampling (the registered model's code) needs no nibabel

    return volumes.float().mul(INT16_SCALE).round_().clamp_(-32768, 32767).to(torch.int16)
