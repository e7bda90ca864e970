"""The anomaly restorer: trained after the main model on coarse noise, within the same budget."""

from __future__ import annotations

import pytest
import torch

from vae3d import pretrained
from vae3d.checkpoint import load_checkpoint
from vae3d.config import COARSE_NOISE
from vae3d.training import RESTORER_DIR, TrainConfig, build_model, fit_with_restorer
from vae3d.training.restorer import build_restorer, main_config, pretrained_head, restorer_config

from .test_trainer import _config, _volumes


def test_the_restorer_takes_its_share_of_the_budget_and_the_coarse_noise_mix():
    cfg = TrainConfig(epochs=20, max_time_s=600, anomaly={"budget_share": 0.25})
    main, restorer = main_config(cfg), restorer_config(cfg)
    assert main.max_time_s == 450 and main.epochs == 20 and main.restoration == cfg.restoration
    assert restorer.max_time_s == 150 and restorer.epochs == 5 and restorer.restoration == COARSE_NOISE
    assert cfg.restoration.coarse_prob < 1.0 == COARSE_NOISE.coarse_prob  # the main model's mix stays faithful
    off = TrainConfig(max_time_s=600, anomaly={"separate": False})
    assert main_config(off).max_time_s == 600  # no restorer: the whole budget is the main model's


def test_fit_with_restorer_fine_tunes_a_copy_of_the_main_model(tmp_path):
    train, val = _volumes(4), _volumes(2, seed=10)
    cfg = _config(epochs=2, anomaly={"budget_share": 0.5})
    trained = fit_with_restorer(build_model(cfg, 16), train, val, cfg, tmp_path / "ckpt", progress=False)
    assert trained.main.epochs_run == 2 and trained.restorer.epochs_run == 1
    assert trained.restorer.best_checkpoint.parent == tmp_path / "ckpt" / RESTORER_DIR
    saved = load_checkpoint(trained.restorer.best_checkpoint)
    assert saved["config"]["restoration"] == COARSE_NOISE.model_dump(mode="json")
    main = load_checkpoint(trained.main.best_checkpoint)["model"]
    assert any(not torch.equal(main[k], saved["model"][k]) for k in main)  # it trained on from there
    # it started from the main model: a restorer built from it before training holds its weights
    start = build_restorer(cfg, build_model(cfg, 16))
    assert all(torch.equal(a, b) for a, b in zip(start.state_dict().values(),
                                                 build_model(cfg, 16).state_dict().values(), strict=True))
    # the switch off: no restorer
    off = _config(epochs=1, anomaly={"separate": False})
    assert fit_with_restorer(build_model(off, 16), train, val, off, tmp_path / "off", progress=False).restorer is None


@pytest.mark.skipif(not pretrained.ANOMALY_WEIGHTS.exists(), reason="no shipped restorer weights")
def test_a_pretrained_start_takes_the_shipped_restorer():
    cfg = TrainConfig(init="pretrained")
    main = build_model(cfg, 64)
    restorer = build_restorer(cfg, main)
    shipped = load_checkpoint(pretrained.ANOMALY_WEIGHTS)["model"]
    assert all(torch.equal(v, shipped[k].float()) for k, v in restorer.state_dict().items())
    assert not torch.equal(restorer.state_dict()["decoder.0.conv.weight"], main.state_dict()["decoder.0.conv.weight"])


@pytest.mark.skipif(not pretrained.HEAD_WEIGHTS.exists(), reason="no shipped anomaly head")
def test_the_shipped_head_serves_a_restorer_that_started_from_the_shipped_one_only():
    from vae3d.anomaly_head import head_map

    head = pretrained_head(TrainConfig(init="pretrained"))
    assert head is not None and not head.training and head.features == tuple(pretrained.describe("head")["features"])
    x = torch.rand(1, 1, 64, 64, 64)
    p = head_map(head, x, x)
    assert p.shape == x.shape and float(p.min()) >= 0 and float(p.max()) <= 1
    # a restorer fine-tuned from the main model, no restorer, or the switch off: no head
    assert pretrained_head(TrainConfig()) is None
    assert pretrained_head(TrainConfig(init="pretrained", anomaly={"separate": False})) is None
    assert pretrained_head(TrainConfig(init="pretrained", anomaly={"head": False})) is None
