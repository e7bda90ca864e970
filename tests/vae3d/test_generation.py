"""Prior sampling and latent variants with per-output seeds; int16 quantisation."""

from __future__ import annotations

import numpy as np
import torch

from vae3d import nifti
from vae3d.generation import latent_variants, quantize, synthesize
from vae3d.model import VAE3D


def _model():
    torch.manual_seed(0)
    return VAE3D(input_size=16, channels=(8,), latent_channels=2, norm_num_groups=4, patch_size=4).eval()


def test_each_output_index_has_its_own_stream():
    model = _model()
    batch = synthesize(model, [0, 1, 2, 3], seed=5)
    assert batch.shape == (4, 1, 16, 16, 16) and batch.min() >= 0 and batch.max() <= 1
    alone = synthesize(model, [2], seed=5)
    torch.testing.assert_close(alone[0], batch[2], atol=1e-5, rtol=0)
    assert not torch.allclose(synthesize(model, [2], seed=6)[0], batch[2])
    x = torch.rand(1, 1, 16, 16, 16)
    variants = latent_variants(model, x, [0, 1], seed=0, scale=1.0)
    assert variants.shape == (2, 1, 16, 16, 16) and not torch.equal(variants[0], variants[1])
    mean = latent_variants(model, x, [0], seed=0, scale=0.0)
    torch.testing.assert_close(mean, model.reconstruct(x).clamp(0, 1), atol=1e-5, rtol=0)


def test_torch_quantize_matches_the_numpy_writer():
    vols = torch.rand(3, 1, 16, 16, 16)
    vols[0, 0, 0, 0, :3] = torch.tensor([0.5 / 32767, 1.5 / 32767, 1.0])
    q = quantize(vols)
    assert q.dtype == torch.int16
    assert np.array_equal(q.numpy(), nifti.quantize(vols.numpy()))


def test_latents_are_drawn_on_the_cpu_whatever_the_models_device():
    """The stream of output i is torch's CPU generator seeded from (seed, i), so a GPU
    decodes the same latents; results come back on the CPU."""
    model = _model()
    z = torch.randn(model.latent_shape, generator=torch.Generator().manual_seed(7 * 1_000_003 + 3))
    out = synthesize(model, [3], seed=7)
    assert out.device.type == "cpu"
    torch.testing.assert_close(out, model.decode(z[None]).clamp(0, 1), atol=1e-6, rtol=0)
