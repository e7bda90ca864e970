"""The ingest flow, run through Prefect for real."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
from nifti_factory import crafted_bad_files, good
from typer.testing import CliRunner

from data_contracts import Manifest, QuarantineReport
from flows.cli import app
from flows.ingest import run_ingest
from flows.settings import load_settings


def _digests(folder):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def mixed(tmp_path):
    src = tmp_path / "src"
    goods = [good(src / f"good{i}.nii.gz", seed=i) for i in range(4)]
    shutil.copy(goods[0], src / "zz_copy_of_good0.nii.gz")  # duplicate content, other name
    bad = crafted_bad_files(src / "bad")
    (src / "derivatives").mkdir()
    good(src / "derivatives" / "mask.nii.gz", seed=99)  # excluded by default
    return src, goods, bad


def test_ingest_batch_of_good_and_bad(prefect_server, tmp_path, mixed):
    src, goods, bad = mixed
    before = _digests(src)
    settings = load_settings(workspace=tmp_path / "ws")
    manifest, quarantine = run_ingest([str(src)], settings)

    assert sorted(r.header.path for r in manifest.rows) == sorted(str(p.resolve()) for p in goods)
    row0 = next(r for r in manifest.rows if r.header.path.endswith("good0.nii.gz"))
    assert [d.path for d in row0.duplicates] == [str((src / "zz_copy_of_good0.nii.gz").resolve())]
    by_path = {q.path: {r.code for r in q.reasons} for q in quarantine.records}
    assert len(by_path) == len(bad)
    for path, code in bad.values():
        assert code in by_path[str(path.resolve())], path.name
    assert not any("derivatives" in r.header.path for r in manifest.rows)
    # written atomically as validated artifacts, and the sources are untouched
    assert Manifest.read(tmp_path / "ws" / "manifest.json") == manifest
    assert QuarantineReport.read(tmp_path / "ws" / "quarantine.json").records == quarantine.records
    assert _digests(src) == before
    assert not list((tmp_path / "ws").glob(".*.tmp"))


def test_ingest_rerun_is_incremental_and_split_is_stable(prefect_server, tmp_path, mixed, monkeypatch):
    src, _goods, _ = mixed
    settings = load_settings(workspace=tmp_path / "ws")
    first, _ = run_ingest([str(src)], settings)

    from vae3d import nifti  # what the contract check reads files with (vae3d.validate)

    reads = []
    original = nifti.read_raw
    monkeypatch.setattr(nifti, "read_raw", lambda p: reads.append(p) or original(p))
    new = good(src / "late_arrival.nii.gz", seed=42)
    second, quarantine = run_ingest([str(src)], settings)

    assert reads == [new.resolve()], "only the new file is read again"
    assert len(second.rows) == len(first.rows) + 1
    old_splits = {r.id: r.split for r in first.rows}
    assert all(old_splits[r.id] == r.split for r in second.rows if r.id in old_splits)
    assert len(quarantine.records) == 11


def test_ingest_from_csv_and_json_lists(prefect_server, tmp_path):
    src = tmp_path / "data"
    paths = [good(src / f"v{i}.nii.gz", seed=i) for i in range(3)]
    (tmp_path / "list.csv").write_text("path,label\n" + "".join(f"data/v{i}.nii.gz,x\n" for i in range(2)))
    (tmp_path / "list.json").write_text(json.dumps({"paths": [str(paths[2])]}))
    settings = load_settings(workspace=tmp_path / "ws")
    manifest, _ = run_ingest([str(tmp_path / "list.csv"), str(tmp_path / "list.json")], settings)
    assert sorted(r.header.path for r in manifest.rows) == sorted(str(p.resolve()) for p in paths)


def test_cli_ingest_strict_exit_code_and_summary(prefect_server, tmp_path, mixed):
    src, _, _ = mixed
    runner = CliRunner()
    ok = runner.invoke(app, ["--workspace", str(tmp_path / "ws"), "ingest", str(src)])
    assert ok.exit_code == 0, ok.output
    assert "quarantined" in ok.output and "constant_image" in ok.output
    strict = runner.invoke(app, ["--workspace", str(tmp_path / "ws"), "ingest", str(src), "--strict"])
    assert strict.exit_code == 1


def test_cli_missing_source_is_a_clear_error(prefect_server, tmp_path):
    result = CliRunner().invoke(app, ["--workspace", str(tmp_path / "ws"), "ingest", str(tmp_path / "nope")])
    assert result.exit_code != 0
    assert "does not exist" in str(result.exception) or "does not exist" in result.output


def test_two_sessions_of_one_subject_never_straddle_splits(prefect_server, tmp_path):
    """BIDS-shaped input: every subject's visits (ses-1, ses-2) land in one split, and the manifest
    says the subject decided it; a file with no sub- entity is split by its content."""
    from data_contracts import SplitFractions, split_for, subject_of

    src = tmp_path / "bids"
    for s in range(12):
        for ses in (1, 2):
            good(src / f"sub-{s:02d}" / f"ses-{ses}" / "anat" / f"sub-{s:02d}_ses-{ses}_T1w.nii.gz",
                 seed=100 * s + ses)
    good(src / "loose_scan.nii.gz", seed=999)
    manifest, _ = run_ingest([str(src)], load_settings(workspace=tmp_path / "ws"))
    by_subject: dict[str, set[str]] = {}
    for row in manifest.rows:
        if row.subject is not None:
            assert row.split_by == "subject" and row.subject == subject_of(row.header.path)
            by_subject.setdefault(row.subject, set()).add(row.split)
    assert len(by_subject) == 12 and all(len(splits) == 1 for splits in by_subject.values()), by_subject
    assert len({s for splits in by_subject.values() for s in splits}) >= 2, "subjects spread over splits"
    loose = next(r for r in manifest.rows if r.header.path.endswith("loose_scan.nii.gz"))
    assert loose.split_by == "content" and loose.subject is None
    assert loose.split == split_for(loose.header.sha256, SplitFractions())
    # the subject's label is read from the file name or a folder above it, not from look-alikes
    assert subject_of("/data/sub-07/anat/scan.nii.gz") == "07"
    assert subject_of("/data/mysub-07_T1w.nii.gz") is None
