"""Latent priors: fitted to data built for the test, seeded and deterministic, and stored as tensors."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from vae3d.checkpoint import load_checkpoint, save_checkpoint
from vae3d.prior import LowRankGaussian, StandardNormal, fit_prior, prior_from_state

SHAPE = (2, 8, 8, 8)


def _latents(n: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n latents on a 2-dimensional plane through a mean (plus a little noise), and the plane's directions."""
    g = torch.Generator().manual_seed(seed)
    d = 2 * 8 * 8 * 8
    mean = torch.randn(d, generator=g)
    dirs = torch.linalg.qr(torch.randn(d, 2, generator=g)).Q.T  # (2, d) orthonormal
    coeffs = torch.randn(n, 2, generator=g) * torch.tensor([3.0, 1.0])
    x = mean + coeffs @ dirs + 0.01 * torch.randn(n, d, generator=g)
    return x.reshape(n, *SHAPE), dirs


def test_lowrank_finds_the_directions_and_spread_of_the_data():
    latents, dirs = _latents()
    prior = LowRankGaussian.fit(latents, rank=2)
    assert prior.rank == 2 and prior.latent_shape == SHAPE
    # the basis spans the data's plane, ordered by spread (sd 3 then 1)
    overlap = (prior.basis / prior.basis.norm(dim=1, keepdim=True)) @ dirs.T
    assert torch.allclose(overlap.abs().max(dim=1).values, torch.ones(2), atol=0.02)
    assert prior.basis.norm(dim=1).tolist() == pytest.approx([3.0, 1.0], rel=0.35)
    assert float(prior.residual_std.max()) < 0.03  # what the plane leaves out: the noise
    samples = prior.sample(range(400), seed=1).reshape(400, -1)
    assert samples.mean(0).sub(prior.mean).abs().max() < 0.5
    assert float(((samples - prior.mean) @ dirs[0]).std()) == pytest.approx(3.0, rel=0.2)
    # temperature 0 gives the mean latent
    assert torch.allclose(prior.sample([0], seed=1, temperature=0.0).reshape(-1), prior.mean)
    # a registered spread is a temperature the request's multiplies, and it is stored with the prior
    wide = LowRankGaussian.fit(latents, rank=2, spread=1.5)
    assert torch.allclose(wide.sample([0, 1], seed=1, temperature=0.8), prior.sample([0, 1], seed=1, temperature=1.2))
    assert prior_from_state(wide.state()).spread == 1.5


def test_rank_is_capped_by_the_number_of_scans_and_bad_requests_are_refused():
    latents, _ = _latents(n=5)
    assert LowRankGaussian.fit(latents, rank=32).rank == 4
    with pytest.raises(ValueError, match="at least 2"):
        LowRankGaussian.fit(latents[:1])
    with pytest.raises(ValueError, match="prior kind must be one of"):
        fit_prior("gmm", latents)


TINY_DIFFUSION = {"widths": (8, 16), "train_steps": 20, "sampling_steps": 5, "batch_size": 4}


@pytest.mark.parametrize("kind", ["normal", "lowrank", "diffusion"])
def test_fit_and_sampling_are_seeded_and_survive_storage(tmp_path, kind):
    latents, _ = _latents()
    options = TINY_DIFFUSION if kind == "diffusion" else {}
    a, b = fit_prior(kind, latents, rank=8, **options), fit_prior(kind, latents, rank=8, **options)
    first = a.sample([0, 1, 2], seed=7)
    assert torch.equal(first, b.sample([0, 1, 2], seed=7)), "same data, same seed: same bytes"
    assert not torch.equal(first, a.sample([0, 1, 2], seed=8))
    # output i has its own stream: the same whether drawn alone or with others
    assert torch.equal(a.sample([2], seed=7)[0], first[2])
    # stored as tensors (loaded with weights_only=True); float16 storage moves a sample by rounding only
    knots = torch.tensor([[0.1, 0.3, 1.0], [0.1, 0.5, 1.0]])  # an intensity map (vae3d.intensity) goes with it
    path = save_checkpoint(tmp_path / "prior.pt", dataclasses.replace(a, intensity=knots).state())
    back = prior_from_state(load_checkpoint(path))
    assert back.kind == kind and back.latent_shape == SHAPE and torch.equal(back.intensity, knots)
    assert prior_from_state(a.state()).intensity is None
    assert torch.allclose(back.sample([0, 1, 2], seed=7), first, atol=0.03)
    assert torch.equal(back.sample([0, 1, 2], seed=7), back.sample([0, 1, 2], seed=7))


def test_the_normal_prior_is_the_models_own():
    """N(0, I) draws the numbers generation drew before priors existed (a version without a
    fitted prior keeps its outputs' bytes)."""
    from vae3d.generation import output_generator

    z = StandardNormal(SHAPE).sample([3], seed=5, temperature=0.5)
    assert torch.equal(z[0], torch.randn(SHAPE, generator=output_generator(5, 3)) * 0.5)


def test_latent_diffusion_samples_stay_where_the_training_latents_lie():
    """A short training on latents spread along one direction through a mean: the samples stay
    within the data's scale (an undertrained noise-predicting model sent them tens of standard
    deviations away; the velocity-predicting one falls back towards the mean) and still differ."""
    from vae3d.latent_diffusion import LatentDiffusion, fold, unfold

    g = torch.Generator().manual_seed(0)
    mean, direction = torch.randn(SHAPE, generator=g), torch.ones(SHAPE)
    direction[1] = -1
    direction /= direction.norm()
    latents = mean + 4 * torch.randn(64, generator=g)[:, None, None, None, None] * direction
    z = torch.randn(5, *SHAPE)
    assert torch.equal(unfold(fold(z)), z)
    prior = LatentDiffusion.fit(latents, widths=(16, 32), train_steps=100, batch_size=16, lr=3e-3, sampling_steps=10)
    assert prior.scale == pytest.approx(4 / direction.numel() ** 0.5, rel=0.2)
    deviations = (prior.sample(range(8), seed=0) - mean) / prior.scale  # in the data's standard deviations
    assert float(deviations.std()) < 2.0, float(deviations.std())
    assert float(deviations.flatten(1).std(0).mean()) > 0.1  # not one sample eight times
