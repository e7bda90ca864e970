"""prefect.yaml deployed to a real local Prefect server and run through a real worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from net import free_port
from nifti_factory import good

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent



def _api(env: dict, path: str, body: dict | None = None):
    req = urllib.request.Request(env["PREFECT_API_URL"] + path, method="POST" if body is not None else "GET",
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-server-home")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_UI_ENABLED="false",
               MLFLOW_DISABLE_TELEMETRY="true", VAE3D_PROJECT_DIR=str(ROOT), PATH=f"{BIN}:{env['PATH']}")
    log = open(home / "server.log", "w")  # noqa: SIM115 - the server writes it until the fixture stops it
    proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    env["PREFECT_API_URL"] = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 180
    while True:
        try:
            _api(env, "/health")
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                log_tail = (home / "server.log").read_text()[-3000:]
                raise RuntimeError("prefect server did not start:\n" + log_tail) from None
            time.sleep(1)
    yield env
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def _run(cmd: list[str], env: dict, timeout: int = 300) -> str:
    out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def test_deploy_from_prefect_yaml_schedules_and_worker_run(server, tmp_path):
    env = server
    prefect = str(BIN / "prefect")
    _run([prefect, "work-pool", "create", "vae3d-process", "--type", "process", "--overwrite"], env)
    _run([prefect, "--no-prompt", "deploy", "--all", "--prefect-file", str(ROOT / "prefect.yaml")], env)

    deployments = {d["name"]: d for d in _api(env, "/deployments/filter", {})}
    assert {"nightly-ingest", "weekly-retrain", "nightly-synthetic", "denoise", "super-resolve", "anomaly", "augment",
            "embed"} <= set(deployments)
    crons = {name: [s["schedule"]["cron"] for s in d["schedules"]] for name, d in deployments.items()}
    assert crons["nightly-ingest"] == ["0 2 * * *"] and crons["weekly-retrain"] == ["0 4 * * 0"]
    assert crons["denoise"] == []
    assert deployments["nightly-ingest"]["work_pool_name"] == "vae3d-process"

    src = tmp_path / "incoming"
    for i in range(3):
        good(src / f"v{i}.nii.gz", seed=i)
    params = json.dumps({"sources": [str(src)], "workspace": str(tmp_path / "ws")})
    out = _run([prefect, "deployment", "run", "scheduled-ingest/nightly-ingest", "--params", params], env)
    run_id = next(line.split()[-1] for line in out.splitlines() if "UUID" in line)
    _run([prefect, "worker", "start", "--pool", "vae3d-process", "--run-once"], env, timeout=600)
    deadline = time.monotonic() + 300
    while (state := _api(env, f"/flow_runs/{run_id}")["state"]["type"]) not in ("COMPLETED", "FAILED", "CRASHED"):
        assert time.monotonic() < deadline, f"flow run stuck in {state}"
        time.sleep(2)
    assert state == "COMPLETED"
    manifest = json.loads((tmp_path / "ws" / "manifest.json").read_text())
    assert len(manifest["rows"]) == 3


def test_serve_refuses_without_a_server(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    out = subprocess.run([str(BIN / "vae3d"), "--workspace", str(tmp_path), "serve"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "prefect server start" in out.stdout + out.stderr


