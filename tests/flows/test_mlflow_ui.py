"""`mlflow ui` on the workspace store (the README's command) shows runs, figures and the model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from net import free_port

from flows.tracking import mlflow_ui_command


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def test_mlflow_ui_serves_the_workspace_store(trained):
    settings, _ = trained
    port = free_port()
    # the command the CLI prints, as a user pastes it into a shell without the venv on PATH
    printed = mlflow_ui_command(settings)
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != venv_bin)
    env = {**os.environ, "PATH": path}
    proc = subprocess.Popen(f"exec {printed} --port {port} --workers 1", shell=True,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(base + "/health", timeout=2)
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "mlflow ui did not start"
                time.sleep(0.5)
        exps = _get(base + "/api/2.0/mlflow/experiments/get-by-name?experiment_name=vae3d")["experiment"]
        runs = json.loads(urllib.request.urlopen(urllib.request.Request(
            base + "/api/2.0/mlflow/runs/search", data=json.dumps({"experiment_ids": [exps["experiment_id"]]}).encode(),
            headers={"Content-Type": "application/json"}), timeout=10).read())["runs"]
        assert runs
        run_id = runs[0]["info"]["run_id"]
        files = _get(base + f"/api/2.0/mlflow/artifacts/list?run_id={run_id}&path=figures")["files"]
        assert {f["path"] for f in files} >= {"figures/reconstructions.png", "figures/prior_samples.png"}
        models = _get(base + "/api/2.0/mlflow/registered-models/get?name=vae3d")["registered_model"]
        assert any(a["alias"] == "champion" for a in models.get("aliases", []))
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()
