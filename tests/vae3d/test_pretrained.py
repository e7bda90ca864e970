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


def test_pretrained_init_refuses_another_architecture_with_the_fix(tmp_path, monkeypatch):
    cfg = TrainConfig(init="pretrained",
                      model={"channels": [8, 16], "latent_channels": 4, "norm_num_groups": 4, "patch_size": 4})
    if not pretrained.WEIGHTS.exists():
        with pytest.raises(pretrained.PretrainedUnavailable, match="--init scratch"):
            build_model(cfg, 16)
        return
    with pytest.raises(pretrained.PretrainedUnavailable, match=r"default train\.model settings.*--init scratch"):
        build_model(cfg, 16)
    monkeypatch.setattr(pretrained, "WEIGHTS", tmp_path / "missing.pt")
    with pytest.raises(pretrained.PretrainedUnavailable, match=r"missing.*reinstall"):
        build_model(TrainConfig(init="pretrained"), 64)
