"""A full disk and a read-only folder (a real tmpfs): clear errors, nothing partial, inputs kept."""

from __future__ import annotations

import errno
import subprocess

import pytest

from data_contracts.generation import GenerationRequest, Provenance
from flows.generate import run_generate
from vae3d import files
from vae3d.outputs import sidecar_path


@pytest.fixture
def tiny_fs(tmp_path):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(mnt)], check=True,
                       capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {exc}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def _snapshot(folder):
    return {p: files.sha256_file(p) for p in folder.rglob("*") if p.is_file()}


def test_disk_full_gives_a_clear_error_and_no_partial_output(trained, tiny_fs):
    settings, src = trained
    ckpts = _snapshot(settings.workspace / "checkpoints")
    inputs = _snapshot(src)
    req = GenerationRequest(mode="synthetic", n=40, seed=1, batch_size=2)
    with pytest.raises(OSError) as info:
        run_generate(req, settings, str(tiny_fs / "out"))
    assert info.value.errno == errno.ENOSPC
    assert "cannot write" in str(info.value) and str(tiny_fs / "out") in str(info.value)
    leftovers = [p for p in (tiny_fs / "out").iterdir() if ".tmp" in p.name]
    assert not leftovers, leftovers
    for volume in (tiny_fs / "out").glob("*.nii.gz"):  # what was finished is complete or absent
        side = sidecar_path(volume)
        if side.exists():
            assert Provenance.model_validate_json(side.read_text()).output_sha256 == files.sha256_file(volume)
    assert _snapshot(settings.workspace / "checkpoints") == ckpts
    assert _snapshot(src) == inputs


def test_read_only_folder_gives_a_clear_error(trained, tiny_fs):
    settings, _ = trained
    (tiny_fs / "out").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_fs)], check=True)
    with pytest.raises(OSError) as info:
        run_generate(GenerationRequest(mode="synthetic", n=2, seed=1), settings, str(tiny_fs / "out"))
    assert info.value.errno in (errno.EROFS, errno.EACCES)
    assert str(tiny_fs / "out") in str(info.value)
