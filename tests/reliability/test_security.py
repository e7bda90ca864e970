"""Paths confined to allowed roots, weights checked against their registered checksum,
checkpoints that carry code refused."""

from __future__ import annotations

import json
import os

import mlflow
import pytest
import torch
from nifti_factory import good

from data_contracts import PipelineError, QuarantineReport
from data_contracts.paths import PathEscape, confine
from flows.ingest import run_ingest
from flows.preprocess import run_preprocess
from flows.settings import load_settings
from vae3d.checkpoint import load_checkpoint


def test_confine_rejects_dotdot_and_symlink_escapes(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.nii").write_text("x")
    os.symlink(outside / "secret.nii", root / "link.nii")
    assert confine(root / "a" / ".." / "b.nii", [root]) == (root / "b.nii").resolve()
    with pytest.raises(PathEscape, match="outside the allowed roots"):
        confine(root / ".." / "outside" / "secret.nii", [root])
    with pytest.raises(PathEscape):
        confine(root / "link.nii", [root])


def test_ingest_quarantines_list_and_symlink_escapes_without_reading_them(prefect_server, tmp_path):
    src, outside = tmp_path / "src", tmp_path / "outside"
    good(src / "ok.nii.gz", seed=1)
    secret = good(outside / "secret.nii.gz", seed=2)
    os.symlink(secret, src / "sneaky.nii.gz")
    (src / "list.csv").write_text("path\nok.nii.gz\n../outside/secret.nii.gz\n")
    settings = load_settings(workspace=tmp_path / "ws", allowed_roots=[src])
    manifest, quarantine = run_ingest([str(src), str(src / "list.csv")], settings)
    assert [r.header.path for r in manifest.rows] == [str((src / "ok.nii.gz").resolve())]
    escaped = {q.path: q for q in quarantine.records}
    assert str(src / "sneaky.nii.gz") in escaped
    assert str(outside / "secret.nii.gz") in {os.path.abspath(p) for p in escaped}
    assert all(q.reasons[0].code == "path_escape" and q.sha256 is None for q in quarantine.records)
    # once its folder is allowed explicitly, the symlinked scan is ingested
    allowed = load_settings(workspace=tmp_path / "ws2", allowed_roots=[src, outside])
    manifest, quarantine = run_ingest([str(src)], allowed)
    assert sorted(r.header.path for r in manifest.rows) == sorted([str((src / "ok.nii.gz").resolve()), str(secret)])
    assert not quarantine.records


def test_hand_edited_manifest_cannot_point_outside_or_widen_the_roots(prefect_server, tmp_path):
    src = tmp_path / "src"
    good(src / "a.nii.gz", seed=1)
    good(src / "b.nii.gz", seed=2)
    settings = load_settings(workspace=tmp_path / "ws", allowed_roots=[src],
                             preprocess={"target_shape": (16, 16, 16), "target_spacing": (8.0, 8.0, 8.0)})
    run_ingest([str(src)], settings)
    manifest_path = tmp_path / "ws" / "manifest.json"
    doc = json.loads(manifest_path.read_text())
    elsewhere = good(tmp_path / "elsewhere" / "x.nii.gz", seed=3)
    doc["rows"][0]["header"]["path"] = str(elsewhere)
    doc["sources"] += ["/", str(elsewhere.parent)]  # the manifest is not where the allowed roots come from
    manifest_path.write_text(json.dumps(doc))
    index = run_preprocess(settings, allow_shrink=True)
    assert [os.path.basename(i.source_path) for i in index.items] == ["b.nii.gz"]
    report = QuarantineReport.read(tmp_path / "ws" / "quarantine_preprocess.json")
    assert [(r.path, r.reasons[0].code) for r in report.records] == [(str(elsewhere), "path_escape")]


def test_an_ingest_source_outside_the_allowed_roots_is_refused_before_anything_is_read(prefect_server, tmp_path):
    src = tmp_path / "src"
    good(src / "a.nii.gz", seed=1)
    settings = load_settings(workspace=tmp_path / "ws", allowed_roots=[])
    with pytest.raises(PipelineError, match="outside the allowed roots") as info:
        run_ingest([str(src)], settings)
    assert "VAE3D_ALLOWED_ROOTS" in info.value.fix and info.value.exit_code == 2
    assert not (tmp_path / "ws" / "manifest.json").exists()


def test_a_deployment_run_cannot_read_or_write_outside_the_roots(prefect_server, tmp_path, monkeypatch):
    from flows.deployments import scheduled_generate

    monkeypatch.setenv("VAE3D_ALLOWED_ROOTS", "[]")  # a worker's settings: the workspace only
    ws = tmp_path / "ws"
    ws.mkdir()
    escape = ws / ".." / "escaped"
    with pytest.raises(PipelineError, match="generate --out"):
        scheduled_generate(mode="synthetic", n=1, out=str(escape), workspace=str(ws))
    assert not escape.exists()
    secret = good(tmp_path / "elsewhere" / "x.nii.gz", seed=3)
    with pytest.raises(PipelineError, match="generate input"):
        scheduled_generate(mode="denoise", inputs=[str(secret)], workspace=str(ws))


def test_altered_weights_are_refused_at_load(trained, tmp_path):
    settings, _ = trained
    uri = f"sqlite:///{settings.workspace / 'mlflow' / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    local = mlflow.artifacts.download_artifacts("models:/vae3d/1", dst_path=str(tmp_path / "model"))
    assert mlflow.pyfunc.load_model(local) is not None
    weights = next((tmp_path / "model").rglob("best.pt"))
    state = torch.load(weights, weights_only=True)
    first = next(iter(state["model"]))
    state["model"][first] = state["model"][first] + 1e-3  # a quietly poisoned model
    torch.save(state, weights)
    with pytest.raises(RuntimeError, match="altered"):
        mlflow.pyfunc.load_model(local)


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_checkpoints_that_carry_code_are_refused(tmp_path):
    torch.save({"model": {}, "evil": _Payload()}, tmp_path / "evil.pt")
    with pytest.raises(RuntimeError, match="damaged or not a vae3d checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")
