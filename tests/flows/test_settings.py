"""The one settings object: precedence, config files, clear errors; state stays in the workspace."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from nifti_factory import good
from pydantic import ValidationError

from flows.settings import load_settings


def test_precedence_flags_env_file_defaults(tmp_path, monkeypatch):
    cfg = tmp_path / "settings.toml"
    cfg.write_text('seed = 7\n[train]\nepochs = 3\nbeta = 0.5\n[preprocess]\ntarget_shape = [32, 32, 32]\n')
    monkeypatch.setenv("VAE3D_TRAIN__EPOCHS", "11")
    s = load_settings(cfg, workspace=tmp_path / "ws")
    assert s.seed == 7 and s.train.beta == 0.5          # from the file
    assert s.train.epochs == 11                          # env beats the file
    assert s.preprocess.target_shape == (32, 32, 32)
    assert s.train.lr == 2e-3                            # default
    assert s.workspace == tmp_path / "ws"                # the flag beats everything
    assert load_settings(cfg, seed=1).seed == 1


def test_yaml_config_and_nested_env(tmp_path, monkeypatch):
    cfg = tmp_path / "settings.yaml"
    cfg.write_text("train:\n  model:\n    channels: [16, 32]\n")
    monkeypatch.setenv("VAE3D_PREPROCESS__TARGET_SPACING", "[2, 2, 2]")
    s = load_settings(cfg)
    assert s.train.model.channels == (16, 32) and s.preprocess.target_spacing == (2.0, 2.0, 2.0)


def test_bad_values_are_named(tmp_path, monkeypatch):
    monkeypatch.setenv("VAE3D_TRAIN__EPOCHS", "0")
    with pytest.raises(ValidationError, match=r"train\.epochs"):
        load_settings()
    monkeypatch.delenv("VAE3D_TRAIN__EPOCHS")
    with pytest.raises(ValidationError, match="sum to 1"):
        load_settings(ingest={"fractions": {"train": 0.9, "val": 0.2, "test": 0.0}})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")
    (tmp_path / "x.ini").write_text("")
    with pytest.raises(ValueError, match="toml"):
        load_settings(tmp_path / "x.ini")


def test_the_cli_keeps_its_state_in_the_workspace_and_starts_its_server_on_a_loaded_machine(tmp_path):
    """Prefect's temporary server and MLflow state go into the workspace; and with two busy
    processes beside the CLI (a load of about 4 on this 2-core machine failed about 1 run in 7
    with Prefect's 20 s startup timeout) the server still starts. The load stops by itself."""
    home = tmp_path / "home"
    home.mkdir()
    good(tmp_path / "src" / "a.nii.gz", seed=1)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update(HOME=str(home))
    vae3d = str(Path(sys.executable).parent / "vae3d")
    burn = "import time\nt = time.monotonic()\nwhile time.monotonic() - t < 240: pass"
    load = [subprocess.Popen([sys.executable, "-c", burn]) for _ in range(2)]
    try:
        out = subprocess.run([vae3d, "--workspace", str(tmp_path / "ws"), "ingest", str(tmp_path / "src")],
                             env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    finally:
        for p in load:
            p.kill()
            p.wait()
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "ws" / "prefect").is_dir() and (tmp_path / "ws" / "manifest.json").exists()
    assert list(home.iterdir()) == [], "nothing written to the user's home"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "src", "ws"], "nothing in the cwd"


def test_help_teaches_every_stage():
    out = subprocess.run([str(Path(sys.executable).parent / "vae3d"), "--help"], capture_output=True, text=True,
                         timeout=60)
    for command in ("sample-data", "ingest", "preprocess", "train", "generate", "evaluate", "serve", "demo"):
        assert command in out.stdout


def test_the_generate_device_is_a_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("VAE3D_GENERATE__DEVICE", "cpu")
    assert load_settings(workspace=tmp_path).generate.device == "cpu"
    monkeypatch.setenv("VAE3D_GENERATE__DEVICE", "graphics-card")
    with pytest.raises(ValueError, match=r"generate\.device"):
        load_settings(workspace=tmp_path)
