"""Two runs racing for the same place end consistent (threads, for real)."""

from __future__ import annotations

import threading

from nifti_factory import good

from data_contracts import Manifest
from data_contracts.generation import GenerationRequest, RunManifest
from flows.generate import run_generate
from flows.ingest import run_ingest
from flows.settings import load_settings
from vae3d import files


def _race(*calls):
    results, errors = [None] * len(calls), []

    def go(i, fn):
        try:
            results[i] = fn()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(i, fn)) for i, fn in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert not errors, errors
    return results


def test_two_ingests_on_one_workspace(prefect_server, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for i in range(6):
        good(a / f"a{i}.nii.gz", seed=i)
        good(b / f"b{i}.nii.gz", seed=100 + i)
    settings = load_settings(workspace=tmp_path / "ws")
    first, second = _race(lambda: run_ingest([str(a), str(b)], settings),
                          lambda: run_ingest([str(a), str(b)], settings))
    on_disk = Manifest.read(tmp_path / "ws" / "manifest.json")
    assert len(on_disk.rows) == 12 == len({r.header.sha256 for r in on_disk.rows})
    assert {r.id for r in first[0].rows} == {r.id for r in second[0].rows} == {r.id for r in on_disk.rows}
    assert not list((tmp_path / "ws").glob(".*.tmp"))


def test_two_generate_runs_into_one_folder(trained, tmp_path):
    settings, _ = trained
    out = tmp_path / "shared"
    req = GenerationRequest(mode="synthetic", n=8, seed=9, batch_size=2)
    m1, m2 = _race(lambda: run_generate(req, settings, str(out)), lambda: run_generate(req, settings, str(out)))
    vols = sorted(out.glob("sub-*_desc-synthetic_T1w.nii.gz"))
    assert len(vols) == 8 and len(list(out.glob("sub-*_desc-synthetic_T1w.json"))) == 8
    assert m1.skipped_existing + m2.skipped_existing == 8, "one run made them, the other found them complete"
    final = RunManifest.read(out / "run_manifest.json")
    assert [files.sha256_file(p) for p in vols] == [r.sha256 for r in sorted(final.outputs, key=lambda r: r.path)]


def _cli_env(**extra) -> dict:
    import os

    from prefect.settings import PREFECT_API_URL

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_API_URL=PREFECT_API_URL.value(), OMP_NUM_THREADS="1", **extra)
    return env




def test_an_ingest_during_preprocess_leaves_the_index_naming_the_manifest_it_read(prefect_server, tmp_path):
    import hashlib
    import subprocess
    import sys
    import time
    from pathlib import Path

    from data_contracts import DatasetIndex

    src, more, ws = tmp_path / "src", tmp_path / "more", tmp_path / "ws"
    for i in range(40):  # preprocessing 40 of these outlasts an ingest even when one worker has the cores to itself
        good(src / f"v{i:02d}.nii.gz", seed=i, shape=(72, 72, 72))
    good(more / "extra.nii.gz", seed=99, shape=(56, 56, 56))
    settings = load_settings(workspace=ws, preprocess={"target_shape": (16, 16, 16), "target_spacing": (8.0, 8.0, 8.0)})
    run_ingest([str(src)], settings)
    read = hashlib.sha256((ws / "manifest.json").read_bytes()).hexdigest()
    # the default 64^3 grid: a 16^3 one preprocessed every scan before a loaded machine's ingest began
    proc = subprocess.Popen([str(Path(sys.executable).parent / "vae3d"), "--workspace", str(ws), "preprocess"],
                            env=_cli_env(), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not list((ws / "cache").rglob("*.npz")):  # preprocess has read the manifest and is working
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    run_ingest([str(src), str(more)], settings)  # a new scan lands meanwhile
    raced = proc.poll() is None
    assert proc.wait(300) == 0, proc.stderr.read()[-3000:]
    assert raced, "preprocess finished before the ingest: no race to test (make it slower)"
    assert hashlib.sha256((ws / "manifest.json").read_bytes()).hexdigest() != read
    index = DatasetIndex.read(ws / "dataset_index.json")
    assert index.manifest_sha256 == read, "the index names the manifest it was built from"
    assert len(index.items) == 40
