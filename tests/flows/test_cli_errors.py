"""The ``vae3d`` command's mistakes, as a user meets them: real processes, one short
paragraph each (exit code, at most 25 lines, no traceback, the fix named), and nothing lost."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from nifti_factory import good

VAE3D = str(Path(sys.executable).parent / "vae3d")


def _env(api: bool = True, **extra) -> dict:
    """The test's environment; with ``api`` the session's Prefect server (no temporary one)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    if api:
        from prefect.settings import PREFECT_API_URL

        if PREFECT_API_URL.value():
            env["PREFECT_API_URL"] = PREFECT_API_URL.value()
    env.update(extra)
    return env


def vae3d(ws: Path, *args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([VAE3D, "--workspace", str(ws), *args], env=env or _env(), cwd=ws.parent,
                          capture_output=True, text=True, timeout=timeout)


def assert_paragraph(out: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    text = out.stdout + out.stderr
    assert out.returncode == code, text[-3000:]
    assert "Traceback" not in text and "File \"" not in text, text[-3000:]
    assert len(text.strip().splitlines()) <= 25, text
    for needle in needles:
        assert needle in text, (needle, text)
    return text


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_generate_before_any_training_says_to_train(prefect_server, tmp_path):
    out = vae3d(tmp_path / "ws", "generate", "synthetic", "--n", "2")
    assert_paragraph(out, 1, "no model named 'vae3d' is registered yet", "vae3d train")


def test_train_before_ingest_names_ingest_as_the_first_step(prefect_server, tmp_path):
    out = vae3d(tmp_path / "ws", "train")
    assert_paragraph(out, 1, "holds no dataset yet", "vae3d ingest FOLDER")


def test_a_2d_input_to_generate_gets_the_ingest_contracts_reason_and_no_retry(prefect_server, tmp_path):
    flat = tmp_path / "slice.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((32, 32)).astype(np.float32), np.eye(4)), flat)
    t0 = time.monotonic()
    out = vae3d(tmp_path / "ws", "generate", "denoise", str(flat))
    text = assert_paragraph(out, 2, "not_3d", "nothing was generated", str(flat))
    assert "Retrying" not in text and time.monotonic() - t0 < 120


def test_an_unknown_alias_lists_the_aliases_and_versions_that_exist(trained):
    settings, _ = trained
    out = vae3d(settings.workspace, "generate", "synthetic", "--model", "models:/vae3d@nonexistent")
    assert_paragraph(out, 1, "models:/vae3d@nonexistent does not exist", "@champion (v1)", "versions 1")


def test_a_bad_setting_is_one_paragraph_for_every_command(tmp_path):
    for command in (["train"], ["ingest", str(tmp_path)]):
        out = vae3d(tmp_path / "ws", *command, env=_env(VAE3D_TRAIN__EPOCHS="0"))
        assert_paragraph(out, 2, "invalid settings", "train.epochs", "greater than or equal to 1")


def test_evaluating_a_cohort_without_a_test_split_says_to_ingest_more(preprocessed):
    out = vae3d(preprocessed.workspace, "evaluate")
    assert_paragraph(out, 1, "needs scans in the val and test splits", "ingest more scans")


def test_a_shape_the_model_cannot_take_fails_before_preprocess_writes_anything(tmp_path):
    ws = tmp_path / "ws"
    out = vae3d(ws, "preprocess", env=_env(VAE3D_PREPROCESS__TARGET_SHAPE="[63,64,64]"))
    assert_paragraph(out, 2, "preprocess.target_shape=[63, 64, 64] does not fit the model",
                     "VAE3D_PREPROCESS__TARGET_SHAPE='[64,64,64]'")
    assert not ws.exists(), "nothing written"


def test_a_typo_in_a_section_name_is_named_with_the_closest_setting(tmp_path):
    out = vae3d(tmp_path / "ws", "settings", env=_env(VAE3D_TRIAN__EPOCHS="3", VAE3D_TRAIN__BATCH_SIZE="3"))
    assert out.returncode == 0, out.stderr
    assert "VAE3D_TRIAN__EPOCHS is not a setting and is ignored; did you mean VAE3D_TRAIN__EPOCHS?" in out.stderr
    row = next(line for line in out.stdout.splitlines() if line.startswith("VAE3D_TRAIN__BATCH_SIZE="))
    assert row.startswith("VAE3D_TRAIN__BATCH_SIZE=3 *  # default 2"), row  # current (changed), default
    assert any(line.startswith("VAE3D_TRAIN__EPOCHS=20  # default 20") for line in out.stdout.splitlines())


def test_workspace_and_debug_work_after_the_subcommand_too(tmp_path):
    out = subprocess.run([VAE3D, "settings", "--workspace", str(tmp_path / "elsewhere")], env=_env(),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert str(tmp_path / "elsewhere") in out.stdout.replace("\n", "")
    loud = subprocess.run([VAE3D, "train", "--debug", "-w", str(tmp_path / "ws")], env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert loud.returncode == 1 and "Traceback" in loud.stderr and "PipelineError" in loud.stderr


def test_help_shows_no_value_type_for_flags():
    out = subprocess.run([VAE3D, "ingest", "--help"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "COLUMNS": "120"})
    assert out.returncode == 0 and "--allow-shrink" in out.stdout and "<bool>" not in out.stdout, out.stdout


def test_an_empty_source_or_a_shrinking_ingest_leaves_the_manifest_byte_identical(preprocessed, tmp_path):
    ws = preprocessed.workspace
    manifest = ws / "manifest.json"
    before = _sha(manifest)
    empty, texts = tmp_path / "empty_mount", tmp_path / "notes"
    empty.mkdir()
    texts.mkdir()
    (texts / "readme.txt").write_text("not a scan")
    out = vae3d(ws, "ingest", str(empty), str(texts), "--strict")
    assert_paragraph(out, 1, "found no NIfTI volumes", f"{empty}, {texts}", "the manifest was left as it was")
    assert _sha(manifest) == before
    part = tmp_path / "part"
    for i in range(2):
        good(part / f"v{i}.nii.gz", seed=i, shape=(28, 28, 28))
    out = vae3d(ws, "ingest", str(part))
    assert_paragraph(out, 1, "would shrink the dataset from 10 to 2", "--allow-shrink")
    assert _sha(manifest) == before
    out = vae3d(ws, "ingest", str(part), "--allow-shrink")
    assert out.returncode == 0, out.stderr[-2000:]
    assert _sha(manifest) != before


def test_preprocess_refuses_to_drop_scans_that_went_missing(preprocessed):
    ws = preprocessed.workspace
    index = ws / "dataset_index.json"
    before = _sha(index)
    for path in sorted((ws.parent / "src").glob("*.nii.gz"))[:3]:
        path.unlink()  # a mount that lost files since ingest
    # other settings than the cached ones, so every volume is read again
    env = _env(VAE3D_PREPROCESS__TARGET_SHAPE="[16,16,16]", VAE3D_PREPROCESS__TARGET_SPACING="[8,8,8]",
               VAE3D_PREPROCESS__FOREGROUND_MARGIN="3")
    out = vae3d(ws, "preprocess", env=env)
    assert_paragraph(out, 1, "would shrink the dataset index from 10 to 7", "--allow-shrink")
    assert _sha(index) == before
    assert vae3d(ws, "preprocess", "--allow-shrink", env=env).returncode == 0
    assert _sha(index) != before
