import math

import pytest
import torch

from vae3d.losses import VAELoss, kl_divergence, kl_weight


def test_kl_equals_closed_form_against_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(3, 4, 2, 2, 2, generator=g), torch.randn(3, 4, 2, 2, 2, generator=g)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    expected = torch.distributions.kl_divergence(q, p).flatten(1).sum(1).mean()
    torch.testing.assert_close(kl_divergence(mu, logvar), expected)


def test_kl_is_zero_at_the_prior():
    assert float(kl_divergence(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4))) == 0.0


def test_free_bits_floor_per_channel():
    mu = torch.zeros(2, 3, 4)
    mu[:, 0] = 3.0  # channel 0 carries information, channels 1-2 collapsed
    kl = kl_divergence(mu, torch.zeros_like(mu), free_bits=0.5)
    # channel 0: 0.5 * 9 * 4 positions = 18 nats; each collapsed channel is charged 0.5 * 4
    assert float(kl) == pytest.approx(18.0 + 2 * 2.0)
    assert float(kl_divergence(mu, torch.zeros_like(mu))) == pytest.approx(18.0)


@pytest.mark.parametrize(
    "schedule,step,expected",
    [("constant", 0, 0.2), ("linear", 0, 0.0), ("linear", 50, 0.1), ("linear", 500, 0.2),
     ("cyclical", 0, 0.0), ("cyclical", 25, 0.1), ("cyclical", 75, 0.2), ("cyclical", 100, 0.0)],
)
def test_kl_schedules(schedule, step, expected):
    assert kl_weight(step, 0.2, schedule, warmup_steps=100, cycle_steps=100) == pytest.approx(expected)


def test_unknown_schedule_is_a_clear_error():
    with pytest.raises(ValueError, match="cyclical"):
        kl_weight(0, 1.0, "exponential")


def test_vae_loss_terms():
    x = torch.rand(2, 1, 16, 16, 16)
    mu, logvar = torch.zeros(2, 2, 2, 2, 2), torch.zeros(2, 2, 2, 2, 2)
    out = VAELoss("l1", ssim_weight=0.5)(x, x, mu, logvar, 1.0)
    assert float(out["recon"]) == 0.0 and float(out["kl"]) == 0.0
    assert float(out["ssim_loss"]) == pytest.approx(0.0, abs=1e-4)
    out = VAELoss("mse")(x + 0.1, x, mu + 1, logvar, 2.0)
    assert float(out["loss"]) == pytest.approx(0.01 + 2.0 * 0.5 * 16 / 4096, rel=1e-4)
    assert math.isfinite(float(out["loss"]))


def test_the_ssim_term_and_its_gradient_are_monais_ssim_loss():
    from monai.losses import SSIMLoss

    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 1, 20, 20, 20, generator=g)
    recon = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1).requires_grad_()
    zeros = torch.zeros(2, 2, 2, 2, 2)
    ours = VAELoss("l1", ssim_weight=1.0)(recon, x, zeros, zeros, 0.0)["ssim_loss"]
    (grad,) = torch.autograd.grad(ours, recon)
    theirs = SSIMLoss(spatial_dims=3, data_range=1.0)(recon, x)
    (want,) = torch.autograd.grad(theirs, recon)
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-5)
    torch.testing.assert_close(grad, want, atol=1e-7, rtol=1e-3)
