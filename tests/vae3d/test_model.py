"""Shape table and invariants of the VAE (tiny CPU tensors)."""

import pytest
import torch

from vae3d.model import VAE3D

CASES = [
    # kwargs, input size, latent shape
    (dict(channels=(8,), latent_channels=2, patch_size=2, norm_num_groups=4), 16, (2, 8, 8, 8)),
    (dict(channels=(8, 16), latent_channels=4, patch_size=2, norm_num_groups=4), 16, (4, 4, 4, 4)),
    (dict(channels=(8, 8, 16), latent_channels=3, patch_size=2, norm_num_groups=4), 32, (3, 4, 4, 4)),
    (dict(channels=(8, 16), latent_channels=4, patch_size=2, norm_num_groups=8, num_res_blocks=2), 32, (4, 8, 8, 8)),
    (dict(channels=(8, 16), latent_channels=4, patch_size=2, norm_num_groups=4, flat_latent=12), 16, (12,)),
    (dict(channels=(8, 16), latent_channels=2, norm_num_groups=4, patch_size=4), 32, (2, 4, 4, 4)),
    (dict(channels=(8,), latent_channels=2, norm_num_groups=4, patch_size=4), 16, (2, 4, 4, 4)),
]


@pytest.mark.parametrize("kwargs,size,latent", CASES)
def test_shapes(kwargs, size, latent):
    model = VAE3D(input_size=size, **kwargs)
    x = torch.rand(2, 1, size, size, size)
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (2, *latent)
    assert model.latent_shape == latent
    recon, _mu2, _ = model(x)
    assert recon.shape == x.shape
    assert model.reconstruct(x).shape == x.shape
    assert model.decode(mu).shape == x.shape
    assert model.sample(3, torch.Generator().manual_seed(0)).shape == (3, 1, size, size, size)
    rebuilt = VAE3D(**model.hparams())
    assert sum(p.numel() for p in rebuilt.parameters()) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(input_size=18, channels=(8, 16)), "divisible by patch_size"),
        (dict(input_size=16, channels=(8, 12), norm_num_groups=8), "norm_num_groups"),
        (dict(input_size=16, channels=()), "at least one level"),
        (dict(input_size=16, channels=(8,), norm_num_groups=4, flat_latent=0), "flat_latent"),
        (dict(input_size=16, channels=(8,), norm_num_groups=4, patch_size=3), "patch_size"),
        (dict(input_size=20, channels=(8, 8), norm_num_groups=4, patch_size=4), "divisible by patch_size"),
    ],
)
def test_bad_combinations_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VAE3D(**kwargs)


def test_reconstruct_is_deterministic_and_sampling_is_seeded():
    model = VAE3D(input_size=16, channels=(8,), latent_channels=2, norm_num_groups=4, patch_size=2).eval()
    x = torch.rand(1, 1, 16, 16, 16)
    assert torch.equal(model.reconstruct(x), model.reconstruct(x))
    a = model.sample(2, torch.Generator().manual_seed(3))
    b = model.sample(2, torch.Generator().manual_seed(3))
    c = model.sample(2, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_reparameterization_is_differentiable_and_matches_moments():
    mu = torch.full((20000,), 1.5, requires_grad=True)
    logvar = torch.full((20000,), 2 * torch.log(torch.tensor(0.5)).item(), requires_grad=True)
    z = VAE3D.sample_posterior(mu, logvar, torch.Generator().manual_seed(0))
    zd = z.detach()
    assert abs(float(zd.mean()) - 1.5) < 0.02 and abs(float(zd.std()) - 0.5) < 0.02
    z.sum().backward()
    assert mu.grad is not None and logvar.grad is not None


@pytest.mark.parametrize("p", [2, 4])
def test_pixel_shuffle_3d_inverts_the_patchify_layout(p):
    from vae3d.model import pixel_shuffle_3d

    # a volume whose voxels are numbered, cut into p^3 patches the way the stem reads them
    b, c, g = 2, 3, 2
    vol = torch.arange(b * c * (g * p) ** 3, dtype=torch.float32).reshape(b, c, g * p, g * p, g * p)
    patches = vol.reshape(b, c, g, p, g, p, g, p).permute(0, 1, 3, 5, 7, 2, 4, 6).reshape(b, c * p**3, g, g, g)
    out = pixel_shuffle_3d(patches, p)
    assert torch.equal(out, vol)
    # laid out first-axis-fastest (NIfTI's order), so a writer copies nothing
    assert out[0, 0].numpy().flags["F_CONTIGUOUS"]
