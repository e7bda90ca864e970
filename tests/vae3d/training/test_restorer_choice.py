"""Choosing the anomaly restorer's weights on validation scans: the map that finds lesions drawn into
their copies better wins."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vae3d.checkpoint import load_checkpoint, save_checkpoint
from vae3d.config import TrainConfig
from vae3d.evaluation.anomaly import lesioned_draws, volume_auroc
from vae3d.model import load_model
from vae3d.training import TrainResult, build_model
from vae3d.training.restorer import SHIPPED, Trained, choose_weights
from vae3d.training.restorer_choice import MIN_SCANS, choose_restorer, detection, smooth_auroc

from .test_trainer import TINY, _volumes


def _scans(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """``n`` phantoms (``test_trainer._volumes``) with a little noise, as scans have."""
    vols = _volumes(n, size, seed)
    return (vols + 0.01 * torch.randn(vols.shape, generator=torch.Generator().manual_seed(seed))).clamp(0, 1)


def test_the_smooth_auroc_tells_apart_what_the_plain_one_ties_at_one():
    rng = np.random.default_rng(0)
    healthy = rng.normal(size=12)
    near, far = rng.normal(4.0, 1.0, size=24), rng.normal(8.0, 1.0, size=24)
    assert volume_auroc(healthy, near) == volume_auroc(healthy, far) == 1.0
    assert 0.9 < smooth_auroc(healthy, near) < smooth_auroc(healthy, far) <= 1.0
    assert smooth_auroc(healthy, rng.normal(size=2000)) == pytest.approx(0.5, abs=0.1)


def test_a_restorer_that_repairs_a_lesion_beats_one_that_gives_it_back():
    val = _scans(MIN_SCANS)
    lesioned, masks = lesioned_draws(val, [1, 2])
    g = torch.Generator().manual_seed(5)
    err = lambda x: x + 0.01 * torch.randn(x.shape, generator=g)  # every restorer errs a little
    restored = err(val)
    repairs = detection(val, restored, lesioned, err(val.repeat(2, 1, 1, 1, 1)), masks)
    gives_back = detection(val, restored, lesioned, err(lesioned), masks)
    assert repairs["volume_auroc"] == 1.0 and repairs["voxel_auprc"] > 0.5
    assert repairs["criterion"] > gives_back["criterion"] + 0.2
    assert set(repairs) == {"voxel_auprc", "volume_auroc", "smooth_auroc", "criterion"}


def test_the_first_candidate_stays_unless_another_beats_it_by_the_margin_and_two_folds_of_scans_are_needed():
    first = build_model(TrainConfig(model=TINY, seed=1), 32).eval()
    second = build_model(TrainConfig(model=TINY, seed=4), 32).eval()
    val = _scans(MIN_SCANS)
    chosen, figures = choose_restorer({"first": first, "again": first, "second": second}, val, seed=0, margin=0.0)
    assert figures["first"] == figures["again"]  # the same lesions for every candidate
    better = max(figures, key=lambda k: figures[k]["criterion"])
    assert chosen == better and better != "again"  # equals keep the first
    lead = abs(figures["second"]["criterion"] - figures["first"]["criterion"])
    assert choose_restorer({"first": first, "second": second}, val, seed=0, margin=lead + 0.01)[0] == "first"
    with pytest.raises(ValueError, match=f"needs {MIN_SCANS} validation scans"):
        choose_restorer({"first": first}, val[:-1], seed=0)


def test_the_choice_reads_at_most_its_share_of_a_large_validation_split(monkeypatch):
    import vae3d.training.restorer_choice as choice

    model = build_model(TrainConfig(model=TINY, seed=1), 32).eval()
    monkeypatch.setattr(choice, "MAX_SCANS", MIN_SCANS)
    val = _scans(MIN_SCANS + 2)
    assert choose_restorer({"a": model}, val, seed=0) == choose_restorer({"a": model}, val[:MIN_SCANS], seed=0)


def test_a_fine_tune_whose_restorations_overflow_gives_way_to_its_start(tmp_path):
    cfg = TrainConfig(init="pretrained", model=TINY, seed=2, anomaly={"head": False})  # the start is given
    start = build_model(cfg.model_copy(update={"init": "scratch"}), 32)
    broken = {k: torch.full_like(v, float("inf")) if k.startswith("decoder") and v.is_floating_point() else v
              for k, v in start.state_dict().items()}
    best = save_checkpoint(tmp_path / "best.pt", {"model": broken, "hparams": start.hparams()})
    result = TrainResult(epochs_run=1, best_epoch=0, best_metrics={}, history=[], best_checkpoint=best)
    val = _scans(MIN_SCANS)
    choice = choose_weights(cfg, result, start, val, tmp_path)
    assert choice["chosen"] == "shipped" and choice["weights"] == str(tmp_path / SHIPPED)
    assert choice["figures"]["fine-tuned"]["restorations"] == "not finite"
    kept = load_model(Path(choice["weights"]))
    assert all(torch.equal(v, start.state_dict()[k]) for k, v in kept.state_dict().items())
    assert Trained(result, result, choice).restorer_weights == tmp_path / SHIPPED
    # no choice without a shipped start, with the switch off, or on too few validation scans
    switched_off = cfg.model_copy(update={"anomaly": cfg.anomaly.model_copy(update={"choose": False})})
    for off, scans in ((cfg.model_copy(update={"init": "scratch"}), val), (switched_off, val), (cfg, val[:-1])):
        assert choose_weights(off, result, start, scans, tmp_path) is None
    assert Trained(result, result).restorer_weights == best
    assert torch.isinf(load_checkpoint(best)["model"]["decoder.0.conv.weight"]).all()  # the fine-tune is kept on disk
