"""The registered model loads and runs in a fresh venv built from nothing but its own logged
requirements, as in a reviewer's notebook or ``mlflow models serve``. Building the venv takes
minutes (torch and mlflow), so this runs in ``make check-model`` (called by ``.ci/run``), not
in ``make test``."""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path

import mlflow
import pytest

from flows.train import train_flow

pytestmark = [pytest.mark.model_env, pytest.mark.timeout(1500)]

SCRIPT = """
import json, sys, numpy as np, mlflow
uri = sys.argv[1]
mlflow.set_tracking_uri(uri); mlflow.set_registry_uri(uri)
m = mlflow.pyfunc.load_model("models:/vae3d@champion")
x = np.random.default_rng(0).random((2, 1, 16, 16, 16), dtype=np.float32)
out = {mode: list(m.predict(x, params={"mode": mode}).shape)
       for mode in ("reconstruct", "denoise", "anomaly", "embed", "synthetic")}
out["metadata"] = m.metadata.metadata
print(json.dumps(out))
"""


def test_champion_loads_in_a_venv_made_of_its_logged_requirements_only(preprocessed, tmp_path):
    settings = preprocessed
    train_flow(settings)
    uri = f"sqlite:///{settings.workspace / 'mlflow' / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    requirements = mlflow.pyfunc.get_model_dependencies("models:/vae3d@champion")
    lines = Path(requirements).read_text().splitlines()
    pins = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert {p.split("==")[0] for p in pins} >= {"torch", "monai", "numpy", "mlflow"}, pins
    assert all("==" in p for p in pins), f"every requirement is pinned: {pins}"

    env = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env)
    py = env / "bin" / "python"
    install = subprocess.run([str(py), "-m", "pip", "install", "-q", "-r", requirements],
                             capture_output=True, text=True, timeout=1200)
    assert install.returncode == 0, install.stderr[-3000:]
    names = subprocess.run([str(py), "-m", "pip", "list", "--format=json"], capture_output=True, text=True,
                           check=True).stdout
    installed = {d["name"].lower() for d in json.loads(names)}
    assert "nibabel" not in installed and "prefect" not in installed, "the venv must hold the model's needs only"

    run = subprocess.run([str(py), "-c", SCRIPT, uri], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    latent = 4 * 2 * 2 * 2  # 4 latent channels on a 16 / (4 * 2) = 2 grid
    assert out["reconstruct"] == out["denoise"] == out["anomaly"] == out["synthetic"] == [2, 1, 16, 16, 16], out
    assert out["embed"] == [2, latent], out
    assert out["metadata"]["output_shapes"]["embed"] == [-1, latent]
    assert sys.executable not in run.stderr  # nothing of the project's own environment leaked in
