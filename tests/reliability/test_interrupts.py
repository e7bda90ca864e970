"""Ctrl-C (SIGINT to the whole process group, as a terminal sends it) and SIGTERM stop a
generate run within seconds, with a run manifest that lists exactly what is on disk."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data_contracts.generation import RunManifest
from vae3d import files

STOP_WITHIN_S = 15  # seconds, against the minutes the 5000 volumes would take


def _env(tmp_path: Path, temporary_server: bool) -> dict:
    # without PREFECT_API_URL the CLI starts its own temporary server, the one Ctrl-C used to kill
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(OMP_NUM_THREADS="1", MLFLOW_DISABLE_TELEMETRY="true", PREFECT_HOME=str(tmp_path / "prefect-home"))
    if not temporary_server:  # SIGTERM goes to the CLI alone (as kill and systemd send it): the session's server
        from prefect.settings import PREFECT_API_URL

        env["PREFECT_API_URL"] = PREFECT_API_URL.value()
    return env


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupt_stops_generate_within_seconds_with_a_consistent_run_manifest(trained, tmp_path, sig, code):
    settings, _ = trained
    temporary = sig == signal.SIGINT
    out = tmp_path / "out"
    cmd = [str(Path(sys.executable).parent / "vae3d"), "--workspace", str(settings.workspace), "generate",
           "synthetic", "--n", "5000", "--seed", "3", "--batch-size", "2", "--out", str(out)]
    # the CLI starts with SIGINT ignored, as a non-interactive shell starts a background job (`cmd &`):
    # it must still stop on SIGINT (it ran to the end before, when make test itself ran in the background)
    proc = subprocess.Popen(cmd, env=_env(tmp_path, temporary), start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    deadline = time.monotonic() + 300
    while len(list(out.glob("sub-*_desc-synthetic_T1w.json"))) < 4:
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "generate never started writing"
        time.sleep(0.05)
    sent = time.monotonic()
    if temporary:
        os.killpg(proc.pid, sig)  # the whole group, as a terminal's Ctrl-C: the temporary server's group too
    else:
        os.kill(proc.pid, sig)
    try:
        rc = proc.wait(timeout=STOP_WITHIN_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f"still running {STOP_WITHIN_S} s after the signal") from None
    stopped_in = time.monotonic() - sent
    err = proc.stderr.read() + proc.stdout.read()
    assert rc == code, err[-3000:]
    assert stopped_in < STOP_WITHIN_S
    assert "interrupted; re-run the same command" in err and "Traceback" not in err

    manifest = RunManifest.read(out / "run_manifest.json")
    assert manifest.interrupted
    on_disk = sorted(p.name for p in out.glob("sub-*_desc-synthetic_T1w.nii.gz"))
    assert 4 <= len(on_disk) < 5000
    assert sorted(Path(r.path).name for r in manifest.outputs) == on_disk, "the manifest lists what is on disk"
    for record in manifest.outputs:
        assert files.sha256_file(Path(record.path)) == record.sha256
        assert Path(record.path).with_suffix("").with_suffix(".json").exists()
    assert not [p for p in out.iterdir() if ".tmp" in p.name], "no partial file is left"
    if temporary:  # the server logged to its file, not to the user's terminal
        assert (tmp_path / "prefect-home" / "temporary-server.log").exists()
