"""Processes really killed with SIGKILL: training resumes to the same weights; generation
finishes with exactly the requested outputs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from data_contracts.generation import RunManifest
from vae3d import files
from vae3d.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]
TRAIN_SCRIPT = """
import sys, numpy as np, torch
torch.set_num_threads(1)
from vae3d.sample_data import phantom
from vae3d.training import TrainConfig, build_model, fit
vols = torch.from_numpy(np.stack([phantom((32,) * 3, seed=i)[0] for i in range(44)])[:, None] / 1.2).float().clamp(0, 1)
cfg = TrainConfig(epochs=4, batch_size=2, lr=3e-3, warmup_steps=2, beta=0.01, kl_warmup_steps=4, augment_prob=0.5,
                  seed=3, channels_last=False, patience=100,
                  model={"channels": [8, 16], "latent_channels": 4, "norm_num_groups": 4, "patch_size": 4})
fit(build_model(cfg, 32), vols[:40], vols[40:], cfg, sys.argv[1], progress=False)
"""


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(OMP_NUM_THREADS="1", MLFLOW_DISABLE_TELEMETRY="true")
    return env


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"finished before it could be killed: {proc.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, "never reached the kill point"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_sigkill_mid_epoch_resumes_to_identical_weights(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(TRAIN_SCRIPT)
    run = [sys.executable, str(script)]
    subprocess.run([*run, str(tmp_path / "straight")], env=_env(), cwd=ROOT, check=True, timeout=600)

    ckpt = tmp_path / "killed"
    proc = subprocess.Popen([*run, str(ckpt)], env=_env(), cwd=ROOT, start_new_session=True,
                            stderr=subprocess.PIPE, text=True)

    def mid_epoch_two() -> bool:  # epoch 1 is checkpointed, epoch 2 is running
        try:
            return load_checkpoint(ckpt / "last.pt")["epoch"] == 1
        except (FileNotFoundError, RuntimeError):
            return False

    _kill_when(proc, mid_epoch_two)
    # intact and mid-run: a starved test process may kill an epoch or two later than it asked, not after the end
    assert load_checkpoint(ckpt / "last.pt")["epoch"] in (1, 2, 3), "the last checkpoint is intact"
    subprocess.run([*run, str(ckpt)], env=_env(), cwd=ROOT, check=True, timeout=600)
    assert not list(ckpt.glob(".*.tmp")), "no partial checkpoint is left behind"

    a, b = load_checkpoint(tmp_path / "straight" / "last.pt"), load_checkpoint(ckpt / "last.pt")
    assert a["epoch"] == b["epoch"] == 4
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


def test_sigkill_mid_generation_then_rerun_gives_exactly_the_request(trained, tmp_path):
    from prefect.settings import PREFECT_API_URL

    settings, _ = trained
    env = {**_env(), "PREFECT_API_URL": PREFECT_API_URL.value()}
    cmd = [str(Path(sys.executable).parent / "vae3d"), "--workspace", str(settings.workspace), "generate",
           "synthetic", "--n", "150", "--seed", "5", "--batch-size", "2"]
    subprocess.run([*cmd, "--out", str(tmp_path / "straight")], env=env, check=True, timeout=600,
                   capture_output=True)

    out = tmp_path / "killed"
    proc = subprocess.Popen([*cmd, "--out", str(out)], env=env, start_new_session=True,
                            stderr=subprocess.PIPE, text=True)
    _kill_when(proc, lambda: len(list(out.glob("sub-*_desc-synthetic_T1w.json"))) >= 6)
    assert len(list(out.glob("sub-*_desc-synthetic_T1w.json"))) < 150, "killed before the end"
    rerun = subprocess.run([*cmd, "--out", str(out)], env=env, timeout=600, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-3000:]

    volumes = sorted(out.glob("sub-*_desc-synthetic_T1w.nii.gz"))
    assert len(volumes) == 150 and len(list(out.glob("sub-*_desc-synthetic_T1w.json"))) == 150
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp") or p.name.endswith(".tmp.png")]
    manifest = RunManifest.read(out / "run_manifest.json")
    assert manifest.skipped_existing >= 6
    assert sorted(Path(r.path).name for r in manifest.outputs) == [p.name for p in volumes]
    for record in manifest.outputs:
        assert files.sha256_file(Path(record.path)) == record.sha256
    straight_run = RunManifest.read(tmp_path / "straight" / "run_manifest.json")
    straight = {Path(r.path).name: r.sha256 for r in straight_run.outputs}
    assert {Path(r.path).name: r.sha256 for r in manifest.outputs} == straight


def test_a_killed_preprocess_leaves_no_partial_cache_file_after_the_next_run(prefect_server, tmp_path):
    from nifti_factory import good
    from prefect.settings import PREFECT_API_URL

    from data_contracts import DatasetIndex
    from flows.ingest import run_ingest
    from flows.settings import load_settings

    src, ws = tmp_path / "src", tmp_path / "ws"
    for i in range(20):
        good(src / f"v{i:02d}.nii.gz", seed=i, shape=(48, 48, 48))
    run_ingest([str(src)], load_settings(workspace=ws))
    env = {**_env(), "PREFECT_API_URL": PREFECT_API_URL.value(), "VAE3D_PREPROCESS__TARGET_SHAPE": "[16,16,16]",
           "VAE3D_PREPROCESS__TARGET_SPACING": "[8,8,8]"}
    cmd = [str(Path(sys.executable).parent / "vae3d"), "--workspace", str(ws), "preprocess"]
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stderr=subprocess.PIPE, text=True)
    _kill_when(proc, lambda: len(list((ws / "cache").rglob("*.npz"))) >= 3)
    cache = next((ws / "cache" / "preprocess").iterdir())
    # what a kill inside atomic_write_bytes leaves (the kill above lands there only by chance)
    (cache / ".0123.npz.abcdef.tmp").write_bytes(b"partial")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not [p for p in cache.iterdir() if ".tmp" in p.name], "no partial cache file is left"
    assert len(DatasetIndex.read(ws / "dataset_index.json").items) == 20
