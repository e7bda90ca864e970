"""MLflow unreachable: bounded retries then a clear error; a trained checkpoint survives a
tracking server that dies before registration, and a re-run registers it without retraining."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from net import free_port

from flows import tracking
from flows.train import train_flow
from vae3d.training.restorer import restorer_config

BIN = Path(sys.executable).parent



def _bounded(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")


def test_unreachable_tracking_server_is_a_clear_bounded_error(preprocessed, monkeypatch):
    _bounded(monkeypatch)
    uri = f"http://127.0.0.1:{free_port()}"
    settings = preprocessed.model_copy(update={"mlflow": preprocessed.mlflow.model_copy(update={"tracking_uri": uri})})
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="unreachable") as info:
        train_flow(settings)
    assert uri in str(info.value) and "nothing was trained" in str(info.value)
    assert time.monotonic() - start < 180
    checkpoints = settings.workspace / "checkpoints"
    assert not checkpoints.exists() or not any(checkpoints.rglob("*.pt"))


class MlflowServer:
    def __init__(self, root: Path):
        self.root, self.port = root, free_port()
        self.proc = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
        self.proc = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
             "--artifacts-destination", str(self.root / "artifacts"), "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", "1"],
            env=env, stdout=open(self.root / "server.log", "a"),  # noqa: SIM115 - the child holds it
            stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(self.uri + "/health", timeout=2)
                return
            except OSError:
                alive = self.proc.poll() is None and time.monotonic() < deadline
                assert alive, (self.root / "server.log").read_text()[-2000:]
                time.sleep(0.5)

    def kill(self) -> None:
        os.killpg(self.proc.pid, 9)
        self.proc.wait()


def test_checkpoint_survives_a_dead_server_and_registration_is_retried(preprocessed, tmp_path, monkeypatch,
                                                                        mlflow_template):
    _bounded(monkeypatch)
    server = MlflowServer(tmp_path)
    shutil.copy(mlflow_template, tmp_path / "mlflow.db")  # migrated once per session
    server.start()
    settings = preprocessed.model_copy(
        update={"mlflow": preprocessed.mlflow.model_copy(update={"tracking_uri": server.uri})})
    epochs = settings.train.epochs
    original = tracking.MlflowCallback.on_epoch_end

    def dies_after_training(self, epoch, metrics, model):
        original(self, epoch, metrics, model)
        if self.prefix and epoch == restorer_config(settings.train).epochs:
            server.kill()  # the tracking server goes down between training (the restorer last) and registration

    monkeypatch.setattr(tracking.MlflowCallback, "on_epoch_end", dies_after_training)
    with pytest.raises(RuntimeError, match="is kept") as info:
        train_flow(settings)
    # the main model's, then the restorer's (in a folder of the main model's)
    checkpoints = sorted((settings.workspace / "checkpoints").rglob("last.pt"), key=lambda p: len(p.parts))
    assert len(checkpoints) == 2 and all(str(c.parent) in str(info.value) for c in checkpoints)
    stamps = [c.stat().st_mtime_ns for c in checkpoints]

    monkeypatch.setattr(tracking.MlflowCallback, "on_epoch_end", original)
    server.start()
    try:
        result = train_flow(settings)
    finally:
        server.kill()
    assert result["version"] == "1" and result["decision"] == "promoted to champion"
    assert [c.stat().st_mtime_ns for c in checkpoints] == stamps, "registration did not retrain"
    assert result["epochs_run"] == epochs
