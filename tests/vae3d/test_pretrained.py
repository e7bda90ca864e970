"""The shipped pretrained weights: built reproducibly, loaded only into the model they fit."""

from __future__ import annotations

import pytest
import torch

from vae3d import pretrained
from vae3d.checkpoint import load_checkpoint
from vae3d.pretrained.build import build
from vae3d.training import TrainConfig, build_model


@pytest.mark.slow
def test_build_is_reproducible_and_loads_into_the_default_model(tmp_path, monkeypatch):
    a = build(n=4, epochs=1, out=tmp_path / "a.pt", n_val=2, progress=False)
    build(n=4, epochs=1, out=tmp_path / "b.pt", n_val=2, progress=False)
    sa, sb = load_checkpoint(tmp_path / "a.pt")["model"], load_checkpoint(tmp_path / "b.pt")["model"]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert all(v.dtype == torch.float16 for v in sa.values() if v.is_floating_point())
    assert a["cohort"]["seed"] == pretrained.PRETRAIN_SEED and a["hparams"]["input_size"] == 64
    monkeypatch.setattr(pretrained, "WEIGHTS", tmp_path / "a.pt")
    model = build_model(TrainConfig(init="pretrained"), 64)
    for name, value in model.state_dict().items():
        assert torch.equal(value, sa[name].float()), name
    assert not torch.equal(build_model(TrainConfig(), 64).state_dict()["decoder.0.conv.weight"],
                           model.state_dict()["decoder.0.conv.weight"])

    # --from-shipped: the shipped weights (here a.pt) trained further, and the description says so
    c = build(n=4, epochs=1, out=tmp_path / "c.pt", n_val=2, progress=False, from_shipped=True)
    sc = load_checkpoint(tmp_path / "c.pt")["model"]
    assert c["continued_from"]["train"] == a["train"] and c["train"]["epochs"] == 1
    assert not torch.equal(sc["decoder.0.conv.weight"], sa["decoder.0.conv.weight"])  # it trained
    assert not torch.equal(sc["decoder.0.conv.weight"], sb["decoder.0.conv.weight"])  # from a.pt, not from scratch

    # a file by its path (a candidate before it is shipped) loads as the shipped one does
    loaded = pretrained.load_pretrained(build_model(TrainConfig(), 64), "main", tmp_path / "c.pt")
    assert torch.equal(loaded.state_dict()["decoder.0.conv.weight"], sc["decoder.0.conv.weight"].float())


def test_pretrained_init_refuses_another_architecture_with_the_fix(tmp_path, monkeypatch):
    cfg = TrainConfig(init="pretrained",
                      model={"channels": [8, 16], "latent_channels": 4, "norm_num_groups": 4, "patch_size": 4})
    if not pretrained.WEIGHTS.exists():
        with pytest.raises(pretrained.PretrainedUnavailable, match="--init scratch"):
            build_model(cfg, 16)
        return
    with pytest.raises(pretrained.PretrainedUnavailable, match=r"default train\.model settings.*--init scratch"):
        build_model(cfg, 16)
    with pytest.raises(pretrained.PretrainedUnavailable, match=r"vae3d_64cube_3mm\.pt are for .*not this model's"):
        other = build_model(cfg.model_copy(update={"init": "scratch"}), 16)
        pretrained.load_pretrained(other, "main", pretrained.WEIGHTS)  # a file by its path: the error names it
    monkeypatch.setattr(pretrained, "WEIGHTS", tmp_path / "missing.pt")
    with pytest.raises(pretrained.PretrainedUnavailable, match=r"missing.*reinstall"):
        build_model(TrainConfig(init="pretrained"), 64)


@pytest.mark.slow
def test_the_head_build_stores_a_head_that_loads_and_says_how_it_was_made(tmp_path, monkeypatch):
    """``build --which head`` end to end on a 2-scan cohort, 3 steps: the stored head (float16,
    ``weights_only``) is what ``load_head`` rebuilds, and its description names the cohort and
    the training."""
    from vae3d.anomaly_head import FEATURES
    from vae3d.pretrained.build import HEAD_SEED, build_anomaly_head

    info = build_anomaly_head(n=2, steps=3, out=tmp_path / "head.pt", progress=False)
    stored = load_checkpoint(tmp_path / "head.pt")["model"]
    assert all(v.dtype == torch.float16 for v in stored.values() if v.is_floating_point())
    assert info["cohort"]["seed"] == HEAD_SEED and info["train"]["steps"] == 3
    assert tuple(info["features"]) == FEATURES and info["restorer"] == pretrained.describe("anomaly")["val_metrics"]
    monkeypatch.setattr(pretrained, "HEAD_WEIGHTS", tmp_path / "head.pt")
    head = pretrained.load_head()
    assert not head.training and pretrained.describe("head")["train"] == info["train"]
    assert head.description == pretrained.describe("head")  # registration records it without reading the file again
    for name, value in head.state_dict().items():
        assert torch.equal(value, stored[name].float()), name
    x = torch.rand(1, 1, 32, 32, 32)
    from vae3d.anomaly_head import head_map

    p = head_map(head, x, x * 0.9)
    assert p.shape == x.shape and float(p.min()) >= 0.0 and float(p.max()) <= 1.0
    assert pretrained.load_head(tmp_path / "head.pt").description == info, "a head file by its path"


@pytest.mark.slow
def test_a_continued_head_build_starts_from_the_shipped_head_and_records_its_stage(tmp_path):
    """``build --which head --from-shipped``: the head continues the shipped one at the lower rate, and
    its description keeps the shipped head's training as ``continued_from``."""
    from vae3d.pretrained.build import HEAD_FINETUNE_LR, build_anomaly_head

    shipped = pretrained.load_head()
    info = build_anomaly_head(n=2, steps=3, out=tmp_path / "head.pt", progress=False, from_shipped=True)
    assert info["train"]["lr"] == HEAD_FINETUNE_LR and info["continued_from"]["train"] == shipped.description["train"]
    head = pretrained.load_head(tmp_path / "head.pt")
    moved = [float((a - b).abs().max()) for a, b in zip(head.state_dict().values(), shipped.state_dict().values(),
                                                        strict=True) if a.is_floating_point()]
    assert 0 < max(moved) < 0.05, "a few small steps away from the shipped weights, not a fresh start"


def test_a_head_build_that_reads_the_mirrored_residual_says_so_and_cannot_continue_a_head_that_does_not(
        tmp_path, monkeypatch):
    """``build --which head --mirror``: the stored head is rebuilt reading the mirrored residual; a
    continuation of the shipped head (which does not) with ``--mirror`` is refused with the fix; with
    neither ``--mirror`` nor ``--no-mirror`` and no shipped head, the head does not read it."""
    from vae3d.pretrained.build import build_anomaly_head

    info = build_anomaly_head(n=2, steps=2, out=tmp_path / "head.pt", progress=False, mirror=True)
    head = pretrained.load_head(tmp_path / "head.pt")
    assert info["mirror"] and head.mirror and head.in_channels == 2
    assert head.conv_0.conv_0.conv.weight.shape[1] == 3, "the scan, its residual and the mirrored residual"
    if not pretrained.load_head().mirror:
        with pytest.raises(ValueError, match="from scratch"):
            build_anomaly_head(n=2, steps=2, out=tmp_path / "again.pt", progress=False, from_shipped=True, mirror=True)
    monkeypatch.setattr(pretrained, "HEAD_WEIGHTS", tmp_path / "missing.pt")
    assert not build_anomaly_head(n=2, steps=1, out=tmp_path / "plain.pt", progress=False)["mirror"]
