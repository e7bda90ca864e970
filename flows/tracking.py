"""MLflow: the workspace store, the experiment, and the per-epoch logging callback.

The default store is SQLite inside the workspace with artifacts beside it. A fresh SQLite
store must be created by one process before any parallel use (concurrent first use runs
the schema migrations twice and corrupts it), so ``init_store`` migrates it under a file
lock. Set ``VAE3D_MLFLOW__TRACKING_URI`` to use a tracking server instead.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import mlflow
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from flows.locks import exclusive
from flows.settings import MlflowSettings, Settings
from flows.workspace import Workspace


def tracking_uri(ws: Workspace, cfg: MlflowSettings) -> str:
    if cfg.tracking_uri:
        return cfg.tracking_uri
    return f"sqlite:///{ws.mlflow_dir / 'mlflow.db'}"


def init_store(ws: Workspace, cfg: MlflowSettings) -> tuple[MlflowClient, str]:
    """Create or upgrade the store once (under a lock) and return (client, experiment id)."""
    uri = tracking_uri(ws, cfg)
    ws.mlflow_dir.mkdir(parents=True, exist_ok=True)
    ws.locks.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    # held for moments, often by the threads of one run: no "waiting" line
    with exclusive(ws.locks / "mlflow-init.lock", f"the MLflow store {uri}", timeout_s=600, say_waiting=False):
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        exp = client.get_experiment_by_name(cfg.experiment)
        if exp is None:
            artifacts = None if cfg.tracking_uri else (ws.mlflow_dir / "artifacts").as_uri()
            exp_id = client.create_experiment(cfg.experiment, artifact_location=artifacts)
        else:
            exp_id = exp.experiment_id
    return client, exp_id


def flatten(prefix: str, obj) -> dict[str, str]:
    """Nested settings as MLflow params: {'train.model.channels': '(32, 48, 64)', ...}."""
    out: dict[str, str] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(f"{prefix}.{k}" if prefix else str(k), v))
    else:
        out[prefix] = str(obj)[:6000]
    return out


class MlflowCallback:
    """Logs each epoch's metrics to one run (the trainer knows nothing of MLflow), each name after
    ``prefix`` (the anomaly restorer's: ``anomaly_restorer/``)."""

    def __init__(self, client: MlflowClient, run_id: str, prefix: str = ""):
        self.client, self.run_id, self.prefix = client, run_id, prefix

    def on_epoch_end(self, epoch: int, metrics: dict[str, float], model) -> None:
        now = int(time.time() * 1000)
        batch = [
            Metric(key=self.prefix + k, value=float(v), timestamp=now, step=epoch)
            for k, v in metrics.items()
            if k != "epoch" and isinstance(v, (int, float)) and math.isfinite(v)
        ]
        self.client.log_batch(self.run_id, metrics=batch)


def log_figure(client: MlflowClient, run_id: str, fig, name: str) -> None:
    import matplotlib.pyplot as plt

    client.log_figure(run_id, fig, f"figures/{name}")
    plt.close(fig)


def prefect_tags() -> dict[str, str]:
    """MLflow run tags naming the Prefect flow run this runs in (none outside one)."""
    from prefect.runtime import flow_run

    if not flow_run.id:
        return {}
    return {"prefect.flow_run_id": flow_run.id, "prefect.flow_run_name": str(flow_run.name),
            **({"prefect.flow_run_url": flow_run.ui_url} if flow_run.ui_url else {})}


def mlflow_run_link(s: Settings, exp_id: str, run_id: str) -> str:
    """Where the MLflow UI shows a run: the tracking server's, or, for the workspace's SQLite
    store, the one ``vae3d mlflow-ui`` serves (MLflow's default port)."""
    base = s.mlflow.tracking_uri if (s.mlflow.tracking_uri or "").startswith("http") else "http://127.0.0.1:5000"
    return f"{base.rstrip('/')}/#/experiments/{exp_id}/runs/{run_id}"


def mlflow_ui_command(s: Settings) -> str:
    """The command that opens this workspace's MLflow UI, as it can be pasted: the mlflow
    of this environment (a venv's bin is not on PATH after ``make demo``), quoted."""
    import shlex
    import shutil
    import sys

    ws = Workspace.at(s.workspace)
    uri = s.mlflow.tracking_uri or f"sqlite:///{ws.mlflow_dir / 'mlflow.db'}"
    local = Path(sys.executable).parent / "mlflow"
    exe = "mlflow" if shutil.which("mlflow") == str(local) or not local.exists() else str(local)
    return f"{shlex.quote(exe)} ui --backend-store-uri {shlex.quote(uri)} --host 127.0.0.1"
