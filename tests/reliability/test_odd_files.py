"""Files that are not plain readable scans: a FIFO in a list, a file nobody may read.
Real processes with a time limit, so a hang fails the test instead of stalling it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from nifti_factory import good

VAE3D = str(Path(sys.executable).parent / "vae3d")


def _ingest(ws: Path, *sources: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    from prefect.settings import PREFECT_API_URL

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    if PREFECT_API_URL.value():
        env["PREFECT_API_URL"] = PREFECT_API_URL.value()
    return subprocess.run([VAE3D, "--workspace", str(ws), "ingest", *map(str, sources)], env=env,
                          capture_output=True, text=True, timeout=timeout)


def _reasons(ws: Path) -> dict[str, list[str]]:
    doc = json.loads((ws / "quarantine.json").read_text())
    return {Path(r["path"]).name: [x["code"] for x in r["reasons"]] for r in doc["records"]}


def test_a_fifo_in_a_list_is_quarantined_without_blocking(prefect_server, tmp_path):
    src = tmp_path / "src"
    good(src / "a.nii.gz", seed=1)
    os.mkfifo(src / "pipe.nii.gz")  # open() would block until a writer comes
    (src / "list.csv").write_text("path\na.nii.gz\npipe.nii.gz\n")
    t0 = time.monotonic()
    out = _ingest(tmp_path / "ws", src / "list.csv")
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert time.monotonic() - t0 < 120
    assert _reasons(tmp_path / "ws") == {"pipe.nii.gz": ["not_regular_file"]}
    rows = json.loads((tmp_path / "ws" / "manifest.json").read_text())["rows"]
    assert [Path(r["header"]["path"]).name for r in rows] == ["a.nii.gz"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root (CAP_DAC_OVERRIDE) reads a mode-000 file anyway; "
                    "run the suite as an ordinary user to exercise this")
def test_an_unreadable_file_is_quarantined_and_the_rest_are_ingested(prefect_server, tmp_path):
    src = tmp_path / "src"
    good(src / "a.nii.gz", seed=1)
    locked = good(src / "b.nii.gz", seed=2)
    locked.chmod(0)
    try:
        out = _ingest(tmp_path / "ws", src)
    finally:
        locked.chmod(0o644)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert _reasons(tmp_path / "ws") == {"b.nii.gz": ["unreadable"]}
    rows = json.loads((tmp_path / "ws" / "manifest.json").read_text())["rows"]
    assert [Path(r["header"]["path"]).name for r in rows] == ["a.nii.gz"]


def test_odd_entries_of_a_scanned_folder_are_quarantined_with_their_reason(prefect_server, tmp_path):
    from flows.ingest import run_ingest
    from flows.settings import load_settings

    src = tmp_path / "src"
    good(src / "ok.nii.gz", seed=1)
    os.mkfifo(src / "pipe.nii.gz")
    os.symlink(tmp_path / "gone.nii.gz", src / "dangling.nii.gz")
    manifest, quarantine = run_ingest([str(src)], load_settings(workspace=tmp_path / "ws"))
    assert [Path(r.header.path).name for r in manifest.rows] == ["ok.nii.gz"]
    reasons = {Path(q.path).name: (q.reasons[0].code, q.reasons[0].message) for q in quarantine.records}
    assert reasons["pipe.nii.gz"][0] == "not_regular_file" and "FIFO" in reasons["pipe.nii.gz"][1]
    assert reasons["dangling.nii.gz"][0] == "not_regular_file" and "broken symlink" in reasons["dangling.nii.gz"][1]


def test_a_truncated_manifest_names_the_file_and_ingest_rebuilds_it(prefect_server, tmp_path):
    from data_contracts import PipelineError
    from flows.ingest import run_ingest
    from flows.preprocess import run_preprocess
    from flows.settings import load_settings

    src = tmp_path / "src"
    for i in range(3):
        good(src / f"v{i}.nii.gz", seed=i)
    settings = load_settings(workspace=tmp_path / "ws")
    run_ingest([str(src)], settings)
    manifest = tmp_path / "ws" / "manifest.json"
    manifest.write_text(manifest.read_text()[:300])  # cut short, as a full disk leaves it
    with pytest.raises(PipelineError, match=r"manifest\.json is not a valid Manifest") as info:
        run_preprocess(settings)
    assert "vae3d ingest" in info.value.fix
    rebuilt, _ = run_ingest([str(src)], settings)
    assert len(rebuilt.rows) == 3
