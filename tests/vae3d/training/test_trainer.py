"""The training loop on tiny models and 16^3 phantoms (CPU, seconds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vae3d.checkpoint import load_checkpoint
from vae3d.model import load_model
from vae3d.sample_data import phantom
from vae3d.training import NonFiniteLossError, TrainConfig, build_model, fit

TINY = dict(channels=(8, 16), latent_channels=4, norm_num_groups=4, patch_size=4)


def _volumes(n: int, size: int = 16, seed: int = 0) -> torch.Tensor:
    vols = [phantom((size,) * 3, seed=seed + i)[0] for i in range(n)]
    return torch.from_numpy(np.stack(vols)[:, None] / 1.2).float().clamp(0, 1)


def _config(**kw) -> TrainConfig:
    base = dict(epochs=2, batch_size=2, lr=3e-3, warmup_steps=2, beta=0.01, kl_warmup_steps=4,
                augment_prob=0.5, seed=3, model=TINY, channels_last=False)
    base.update(kw)
    return TrainConfig(**base)


def test_tiny_model_overfits_one_volume(tmp_path):
    x = _volumes(1)
    cfg = _config(epochs=150, batch_size=1, augment_prob=0.0, beta=0.0, lr=1e-2, warmup_steps=5, patience=1000)
    model = build_model(cfg, 16)
    with torch.no_grad():
        start = float((model.reconstruct(x) - x).abs().mean())
    result = fit(model, x, x, cfg, tmp_path / "ckpt", progress=False)
    end = result.history[-1]["val_l1"]
    assert end < 0.3 * start, (start, end)
    assert result.history[-1]["val_psnr"] > result.history[0]["val_psnr"]


def test_two_epochs_equal_one_then_resume_one(tmp_path):
    train, val = _volumes(4), _volumes(2, seed=10)
    straight = fit(build_model(_config(), 16), train, val, _config(), tmp_path / "a", progress=False)
    fit(build_model(_config(), 16), train, val, _config(epochs=1), tmp_path / "b", progress=False)
    resumed = fit(build_model(_config(), 16), train, val, _config(), tmp_path / "b", progress=False)
    assert resumed.epochs_run == 2
    a = load_checkpoint(tmp_path / "a" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "last.pt")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["history"][-1]["train_loss"] == b["history"][-1]["train_loss"]
    assert straight.history[-1]["val_ssim"] == resumed.history[-1]["val_ssim"]


def test_nan_in_batch_names_epoch_and_step_and_keeps_checkpoint(tmp_path):
    train, val = _volumes(4), _volumes(2, seed=10)
    fit(build_model(_config(), 16), train, val, _config(epochs=1), tmp_path / "c", progress=False)
    good = load_checkpoint(tmp_path / "c" / "last.pt")
    poisoned = train.clone()
    poisoned[:, :, 3, 3, 3] = float("nan")
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, step 1") as info:
        fit(build_model(_config(), 16), poisoned, val, _config(epochs=3), tmp_path / "c", progress=False)
    assert info.value.epoch == 2 and info.value.step == 1
    kept = load_checkpoint(tmp_path / "c" / "last.pt")
    assert kept["epoch"] == 1
    for key in good["model"]:
        assert torch.equal(good["model"][key], kept["model"][key])
    assert all(torch.isfinite(v).all() for v in kept["model"].values())


def test_early_stopping_callbacks_and_best_checkpoint(tmp_path):
    seen = []

    class Recorder:
        def on_epoch_end(self, epoch, metrics, model):
            seen.append((epoch, metrics["val_ssim"]))

    cfg = _config(epochs=6, lr=1e-9, warmup_steps=1, patience=2, augment_prob=0.0)
    result = fit(build_model(cfg, 16), _volumes(2), _volumes(2, seed=9), cfg, tmp_path / "d",
                 callbacks=[Recorder()], progress=False)
    assert result.stopped_early and result.epochs_run < 6
    assert [e for e, _ in seen] == list(range(1, result.epochs_run + 1))
    model = load_model(result.best_checkpoint)
    assert model.hparams() == build_model(cfg, 16).hparams()
    assert {"val_psnr", "val_ssim", "train_loss", "train_kl"} <= set(result.history[0])
    # a re-run (after a kill between training and registration) trains no further than the stop
    again = fit(build_model(cfg, 16), _volumes(2), _volumes(2, seed=9), cfg, tmp_path / "d",
                callbacks=[Recorder()], progress=False)
    assert again.stopped_early and again.epochs_run == result.epochs_run and len(seen) == result.epochs_run


def test_checkpoint_of_another_model_is_refused(tmp_path):
    train, val = _volumes(2), _volumes(2, seed=5)
    fit(build_model(_config(epochs=1), 16), train, val, _config(epochs=1), tmp_path / "e", progress=False)
    other = _config(model=dict(TINY, latent_channels=2))
    with pytest.raises(ValueError, match="holds a model"):
        fit(build_model(other, 16), train, val, other, tmp_path / "e", progress=False)


def test_empty_validation_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="validation"):
        fit(build_model(_config(), 16), _volumes(2), torch.empty(0, 1, 16, 16, 16), _config(), tmp_path)


def test_corruption_reaches_the_encoder_input_only_and_the_target_stays_clean(tmp_path):
    from vae3d.preprocessing import build_augment
    from vae3d.seeding import derive_seed
    from vae3d.training.trainer import training_pair

    train = _volumes(4)
    before = train.clone()
    cfg = _config(augment_prob=0.0, restoration={"prob": 1.0, "noise_prob": 1.0, "noise_std": [0.1, 0.2]})
    chain = build_augment(prob=0.0, artifacts=False)
    idx = torch.tensor([2, 0])
    x_in, target = training_pair(train, idx, 0, cfg, chain)
    assert torch.equal(target, train[idx])  # the loss compares with the clean volumes
    assert float((x_in - target).abs().mean()) > 0.05
    again, _ = training_pair(train, idx, 0, cfg, chain)
    other, _ = training_pair(train, idx, 1, cfg, chain)
    assert torch.equal(again, x_in) and not torch.equal(other, x_in)  # seeded per (epoch, sample)
    assert torch.equal(train, before)
    # in fit, the model's forward sees exactly the corrupted input
    model = build_model(cfg, 16)
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()) if m.training else None)
    fit(model, train, _volumes(2, seed=10), cfg.model_copy(update={"epochs": 1}), tmp_path / "c", progress=False)
    order = torch.randperm(4, generator=torch.Generator().manual_seed(derive_seed(cfg.seed, "order", 0)))
    want, clean = training_pair(train, order[:2], 0, cfg, chain)
    assert torch.equal(seen[0], want) and not torch.equal(seen[0], clean)
