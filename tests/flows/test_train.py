"""Train flow through Prefect with a real MLflow SQLite store: runs, registry, promotion."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from flows.train import train_flow


def _client(settings) -> MlflowClient:
    uri = f"sqlite:///{settings.workspace / 'mlflow' / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(uri, uri)


def test_train_registers_champion_then_worse_run_stays_candidate(preprocessed):
    settings = preprocessed
    for name in ("vae3d", "flows"):  # as in a fresh process: the flow itself must route the library's lines
        for handler in list(logging.getLogger(name).handlers):
            logging.getLogger(name).removeHandler(handler)
    first = train_flow(settings)
    assert first["version"] == "1" and first["decision"] == "promoted to champion"
    client = _client(settings)
    run = client.get_run(first["run_id"])
    assert run.info.status == "FINISHED"
    assert "train.lr" in run.data.params and "data.manifest_sha256" in run.data.params
    assert len(client.get_metric_history(first["run_id"], "val_ssim")) == 2
    # the anomaly restorer trained after it (ceil(0.4 x 2) epochs), logged under its own names
    assert len(client.get_metric_history(first["run_id"], "anomaly_restorer/val_ssim")) == 1
    assert float(client.get_model_version("vae3d", "1").tags["anomaly_restorer.val_ssim"]) > 0
    artifacts = {a.path for a in client.list_artifacts(first["run_id"], "figures")}
    assert artifacts == {f"figures/{n}.png" for n in
                         ("reconstructions", "restoration", "prior_samples", "prior_traversal", "latent_traversal",
                          "loss_curves")}
    top = {a.path for a in client.list_artifacts(first["run_id"])}
    assert {"model_card.md", "settings.json", "checkpoint", "prior_directions.json"} <= top
    # what each of the prior's leading directions changes in the decoded anatomy, a row each
    table = json.loads(Path(client.download_artifacts(first["run_id"], "prior_directions.json",
                                                      str(settings.workspace))).read_text())
    directions = dict(zip(table["columns"], zip(*table["data"], strict=True), strict=True))
    assert list(directions["direction"]) == list(range(len(table["data"]))) and len(table["data"]) >= 1
    assert all(-1.0 <= c <= 1.0 for c in directions["ventricles_ml_corr"] + directions["brain_ml_corr"])
    assert len(client.get_metric_history(first["run_id"], "prior_direction_brain_ml_corr")) == len(table["data"])
    card = Path(client.download_artifacts(first["run_id"], "model_card.md", str(settings.workspace))).read_text()
    assert "Starting weights: **from scratch**" in card and "restore corrupted inputs" in card
    # each split a dataset with its context (the fixture has no test split)
    logged = {(d.dataset.name, next(t.value for t in d.tags if t.key == "mlflow.data.context"))
              for d in run.inputs.dataset_inputs}
    assert logged == {("vae3d-train", "train"), ("vae3d-val", "val")}, logged
    # the MLflow run names its Prefect flow run; the flow run links the MLflow run and shows the library's lines
    flow_run_id = run.data.tags["prefect.flow_run_id"]
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, LogFilter
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # the lines are sent in batches: send what is queued
    with get_client(sync_client=True) as prefect:
        lines = [log.message for log in prefect.read_logs(LogFilter(flow_run_id={"any_": [flow_run_id]}))]
        links = prefect.read_artifacts(artifact_filter=ArtifactFilter(key={"any_": ["mlflow-run"]}))
    assert any(line.startswith("epoch 1/2: loss") for line in lines), lines  # vae3d.training's logger
    assert any(first["run_id"] in (a.data or "") for a in links), [a.data for a in links]

    worse_train = settings.train.model_copy(update={"lr": 1e-7, "epochs": 1, "seed": 5})
    second = train_flow(settings.model_copy(update={"train": worse_train}))
    assert second["version"] == "2" and second["decision"] == "kept as candidate"
    assert str(client.get_model_version_by_alias("vae3d", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("vae3d", "candidate").version) == "2"
    v2 = client.get_model_version("vae3d", "2")
    assert v2.tags["promotion"].startswith("kept as candidate")
    assert len(v2.tags["weights_sha256"]) == 64 and "git_commit" in v2.tags


def test_a_first_model_below_the_quality_floor_is_not_promoted(preprocessed):
    """With no champion yet, a model below registry.min_val_ssim still stays a candidate."""
    from mlflow.exceptions import MlflowException

    settings = preprocessed.model_copy(update={"registry": preprocessed.registry.model_copy(
        update={"min_val_ssim": 0.99})})
    result = train_flow(settings)
    assert result["decision"] == "kept as candidate", result
    assert "below the quality floor registry.min_val_ssim=0.99" in result["reason"]
    client = _client(settings)
    assert str(client.get_model_version_by_alias("vae3d", "candidate").version) == result["version"]
    with pytest.raises(MlflowException):  # no version is champion
        client.get_model_version_by_alias("vae3d", "champion")


def test_champion_loads_in_a_fresh_process_with_plain_mlflow(preprocessed, tmp_path):
    settings = preprocessed
    train_flow(settings)
    uri = f"sqlite:///{settings.workspace / 'mlflow' / 'mlflow.db'}"
    script = f"""
import json, numpy as np, mlflow
mlflow.set_tracking_uri({uri!r}); mlflow.set_registry_uri({uri!r})
m = mlflow.pyfunc.load_model("models:/vae3d@champion")
x = np.random.default_rng(0).random((2, 1, 16, 16, 16), dtype=np.float32)
r = m.predict(x)
a = m.predict(x, params={{"mode": "anomaly"}})
e = m.predict(x, params={{"mode": "embed"}})
import torch
from vae3d import anomaly, inference  # bundled with the model (its code paths)
w, xt = m.unwrap_python_model(), torch.from_numpy(x)
mirror = w.healthy.mirror_averaged  # registration restores the validation scans mirror-averaged, and records it
by = {{name: anomaly.anomaly_map(xt, inference.reconstruct(net, xt, mirror), w.healthy).numpy()
      for name, net in (("restorer", w.restorer), ("main", w.model))}}
print(json.dumps({{"recon": list(r.shape), "anomaly": list(a.shape), "embed": list(e.shape),
                  "range": [float(r.min()), float(r.max())], "mirror": mirror,
                  "map_of": [name for name, v in by.items() if np.allclose(a, v, atol=1e-6)]}}))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    shapes = json.loads(out.stdout.strip().splitlines()[-1])
    assert shapes["recon"] == [2, 1, 16, 16, 16] and shapes["anomaly"] == [2, 1, 16, 16, 16]
    assert shapes["embed"] == [2, 4 * 2 * 2 * 2]  # 4 latent channels on a 16 / (4 * 2) = 2 grid
    assert 0.0 <= shapes["range"][0] <= shapes["range"][1] <= 1.0
    assert shapes["map_of"] == ["restorer"]  # the anomaly map is the registered restorer's, not the main model's
    assert shapes["mirror"] is True  # ... from its mirror-averaged restoration, as the statistics were fitted


def test_interrupted_training_resumes_in_the_same_mlflow_run(preprocessed):
    """A re-run with the same data and settings continues the checkpoint and the run."""
    settings = preprocessed
    from data_contracts import DatasetIndex
    from flows.train import run_key, start_run

    index = DatasetIndex.read(settings.workspace / "dataset_index.json")
    key = run_key(index, settings)
    run_id = start_run.fn(settings, index, key)  # a run that was started, then the process died
    result = train_flow(settings)
    assert result["run_id"] == run_id
    assert json.loads((settings.workspace / "checkpoints" / key / "mlflow_run.json").read_text())["run_id"] == run_id
    assert np.isfinite(result["best"]["val_ssim"])
