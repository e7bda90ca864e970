"""The preprocess flow through Prefect: cache hits, misses, corruption, quarantine."""

from __future__ import annotations

import pytest
from nifti_factory import good

from data_contracts import DatasetIndex, QuarantineReport
from flows.ingest import run_ingest
from flows.preprocess import run_preprocess
from flows.settings import load_settings
from vae3d.preprocessing import PreprocessCache, stage


@pytest.fixture
def ingested(prefect_server, tmp_path):
    src = tmp_path / "src"
    for i in range(5):
        good(src / f"v{i}.nii.gz", seed=i, shape=(28, 28, 28))
    settings = load_settings(
        workspace=tmp_path / "ws",
        preprocess={"target_shape": (16, 16, 16), "target_spacing": (8.0, 8.0, 8.0)},
    )
    run_ingest([str(src)], settings)
    return src, settings


def _count_computes(monkeypatch):
    calls = []
    original = stage.preprocess_volume
    monkeypatch.setattr(stage, "preprocess_volume", lambda c, p: calls.append(p) or original(c, p))
    return calls


def test_cache_hit_on_rerun_miss_after_settings_change(ingested, monkeypatch):
    _, settings = ingested
    calls = _count_computes(monkeypatch)
    first = run_preprocess(settings)
    assert len(calls) == 5 and len(first.items) == 5
    calls.clear()
    second = run_preprocess(settings)
    assert calls == [], "a re-run with the same settings reads the cache"
    assert [i.cache_digest for i in second.items] == [i.cache_digest for i in first.items]
    changed = settings.model_copy(
        update={"preprocess": settings.preprocess.model_copy(update={"upper_percentile": 99.0})})
    third = run_preprocess(changed)
    assert len(calls) == 5 and third.settings_key != first.settings_key
    index = DatasetIndex.read(settings.workspace / "dataset_index.json")
    assert index == third
    item = PreprocessCache(settings.workspace / "cache" / "preprocess" / third.settings_key).load(
        third.items[0].source_sha256
    )
    assert item.image.shape == (1, 16, 16, 16) and item.image.min() >= 0 and item.image.max() <= 1


def test_corrupt_cache_entry_is_rebuilt_not_used(ingested, monkeypatch):
    _, settings = ingested
    first = run_preprocess(settings)
    victim = first.items[0]
    with open(victim.cache_path, "r+b") as fh:  # flip bytes inside the stored image
        fh.seek(-200, 2)
        fh.write(b"\xff" * 16)
    calls = _count_computes(monkeypatch)
    second = run_preprocess(settings)
    assert [str(c) for c in calls] == [victim.source_path]
    assert second.items[0].cache_digest == victim.cache_digest


def test_volume_failing_a_transform_is_quarantined_rest_go_on(ingested):
    src, settings = ingested
    (src / "v3.nii.gz").unlink()  # vanished between ingest and preprocess
    index = run_preprocess(settings)
    assert len(index.items) == 4
    report = QuarantineReport.read(settings.workspace / "quarantine_preprocess.json")
    assert [r.path for r in report.records] == [str((src / "v3.nii.gz").resolve())]
    assert report.records[0].reasons[0].code == "preprocessing_failed"
    assert (settings.workspace / "figures" / "preprocess_montage.png").stat().st_size > 1000
