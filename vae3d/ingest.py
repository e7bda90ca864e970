"""Ingest as pure functions: find sources, decide what must be (re-)read, build the manifest.

The Prefect flow (``flows/ingest.py``) only wires these together around the parallel
``inspect`` calls; everything here is testable without Prefect.
"""

from __future__ import annotations

import csv
import fnmatch
import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from data_contracts import (
    ContractViolation,
    Manifest,
    ManifestRow,
    PipelineError,
    QuarantineRecord,
    QuarantineReport,
    Reason,
    SplitFractions,
    VolumeHeader,
    VolumeLimits,
    split_for,
    subject_of,
)
from data_contracts.manifest import DuplicateFile
from data_contracts.paths import PathEscape, confine
from vae3d.files import file_kind
from vae3d.nifti import is_nifti_path
from vae3d.validate import inspect_volume

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceFile:
    path: str
    size_bytes: int
    mtime_ns: int

    @classmethod
    def stat(cls, path: Path) -> SourceFile:
        """Size and mtime; a file that cannot even be stat'ed (gone, a broken link) has -1 for both."""
        try:
            st = os.stat(path)
        except OSError:
            return cls(str(path), -1, -1)
        return cls(str(path), st.st_size, st.st_mtime_ns)


def _excluded(rel: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(rel, p) for p in patterns)


def _read_list(path: Path) -> list[Path]:
    """Paths from a CSV (a ``path`` column, or the first column) or JSON list file."""
    base = path.parent
    if path.suffix.lower() == ".json":
        data = json.loads(path.read_text())
        items = data.get("paths") if isinstance(data, dict) else data
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise ValueError(f"{path}: expected a JSON list of paths or {{\"paths\": [...]}}")
    else:
        with open(path, newline="") as fh:
            rows = list(csv.reader(fh))
        if not rows:
            return []
        col = rows[0].index("path") if "path" in rows[0] else 0
        start = 1 if rows[0][col] == "path" else 0
        items = [r[col] for r in rows[start:] if r and r[col].strip()]
    return [(base / p) if not Path(p).is_absolute() else Path(p) for p in items]


def read_labels(sources: Iterable[Path], column: str) -> dict[str, str]:
    """``column`` of every CSV list among ``sources``, keyed by the resolved path of its row's
    ``path`` (relative paths are relative to the list's folder).

    Raises:
        PipelineError: a CSV list has no such column (names the file and the columns it has).
    """
    labels: dict[str, str] = {}
    for src in sources:
        if Path(src).suffix.lower() != ".csv":
            continue
        with open(src, newline="") as fh:
            reader = csv.DictReader(fh)
            if column not in (reader.fieldnames or ()):
                raise PipelineError(f"{src} has no column {column!r} (it has {list(reader.fieldnames or ())})",
                                    where=str(src), fix="pass --label-column with one of its columns", exit_code=2)
            for row in reader:
                labels[str((Path(src).parent / Path(row.get("path", "")).expanduser()).resolve())] = row[column]
    return labels


def discover(
    sources: Iterable[Path], exclude: Sequence[str] = (), allowed_roots: Sequence[Path] = ()
) -> tuple[list[Path], list[tuple[Path, str, str]]]:
    """Every NIfTI file under the given folders or listed in CSV/JSON files, sorted, unique.

    Each found path is resolved (symlinks followed) and must stay inside its source folder
    (for a list file: the list's folder) or one of ``allowed_roots``. What is refused comes
    back as (path, reason code, message), never read:

    - ``path_escape``: a path that leaves the roots (``..``, a symlink out);
    - ``not_regular_file``: a NIfTI name on a FIFO, socket or device, or a broken symlink;
    - ``unreadable``: a folder of the scan that cannot be listed.

    Hidden files (names starting with '.') are skipped: editors' and our own temporary files.

    Returns:
        (files to ingest, refused)

    Raises:
        FileNotFoundError: a source does not exist.
    """
    found: set[Path] = set()
    refused: dict[Path, tuple[str, str]] = {}

    def keep(path: Path, root: Path) -> None:
        try:
            found.add(confine(path, [root, *allowed_roots], what="file"))
        except PathEscape as exc:
            refused[Path(os.path.abspath(path))] = ("path_escape", str(exc))

    for source in sources:
        source = Path(source).expanduser()
        if not source.exists():
            raise FileNotFoundError(f"source {source} does not exist (expected a folder or a .csv/.json list)")
        if source.is_dir():
            for path, odd in _scan(source):
                if not _excluded(path.relative_to(source).as_posix(), exclude):
                    if odd:
                        refused[path] = odd
                    else:
                        keep(path, source)
        elif source.suffix.lower() in (".csv", ".json"):
            for path in _read_list(source):
                keep(path, source.parent)
        else:
            keep(source, source.parent)
    return sorted(found), sorted((p, code, why) for p, (code, why) in refused.items())


def _scan(folder: Path) -> Iterable[tuple[Path, tuple[str, str] | None]]:
    """(path, None) for each NIfTI-named regular file under ``folder`` (file symlinks followed,
    folder symlinks not entered); (path, (code, message)) for a NIfTI name that is no regular
    file, and for a folder that cannot be listed (``unreadable``)."""
    unlisted: list[OSError] = []
    for top, dirs, files in os.walk(folder, onerror=unlisted.append, followlinks=False):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files + [d for d in dirs if is_nifti_path(Path(d))]:
            path = Path(top) / name
            if name.startswith(".") or not is_nifti_path(path):
                continue
            if path.is_file():
                yield path, None
            elif path.is_symlink() and not path.exists():
                yield path, ("not_regular_file", f"{path} is a broken symlink (its target {os.readlink(path)} is gone)")
            else:
                yield path, ("not_regular_file", f"{path} is {file_kind(path.stat().st_mode)}, not a regular file")
    for err in unlisted:
        yield Path(err.filename), ("unreadable", f"folder {err.filename} cannot be listed: {err.strerror}")


def readable(contract, path: Path):
    """``contract.read(path)``, or None when the file is missing or damaged (a truncated
    manifest): ingest then rebuilds it from the sources instead of failing on it."""
    if not Path(path).exists():
        return None
    try:
        return contract.read(path)
    except PipelineError as exc:
        log.warning("%s; ingest writes it again from the sources", exc.what)
        return None


def load_previous(manifest_path: Path, quarantine_path: Path) -> dict[str, VolumeHeader | QuarantineRecord]:
    """Earlier results keyed by path, for incremental re-runs (missing files: empty)."""
    previous: dict[str, VolumeHeader | QuarantineRecord] = {}
    manifest, quarantine = readable(Manifest, manifest_path), readable(QuarantineReport, quarantine_path)
    if manifest is not None:
        for row in manifest.rows:
            previous[row.header.path] = row.header
            for dup in row.duplicates:
                previous[dup.path] = row.header.model_copy(
                    update={"path": dup.path, "size_bytes": dup.size_bytes, "mtime_ns": dup.mtime_ns}
                )
    if quarantine is not None:
        for record in quarantine.records:
            if record.stage == "ingest":
                previous[record.path] = record
    return previous


def unchanged(result: VolumeHeader | QuarantineRecord, source: SourceFile) -> bool:
    return result.size_bytes == source.size_bytes and result.mtime_ns == source.mtime_ns


def refused_record(path: Path, code: str, message: str) -> QuarantineRecord:
    """Quarantine what discovery refused (it is never opened)."""
    try:
        st = os.lstat(path)
        size, mtime = st.st_size, st.st_mtime_ns
    except OSError:  # a list entry that names nothing
        size, mtime = 0, 0
    return QuarantineRecord(path=str(path), sha256=None, size_bytes=size, mtime_ns=mtime,
                            reasons=(Reason.of(code, message),))


def inspect_file(path: str, limits: VolumeLimits) -> VolumeHeader | QuarantineRecord:
    """Validate one file; a rejection comes back as a quarantine record, never an exception."""
    source = SourceFile.stat(Path(path))
    try:
        return inspect_volume(Path(path), limits)
    except ContractViolation as exc:
        return QuarantineRecord(
            path=path, sha256=exc.sha256, size_bytes=source.size_bytes, mtime_ns=source.mtime_ns,
            reasons=tuple(exc.reasons),
        )



def check_inputs(paths: Sequence[str], limits: VolumeLimits) -> None:
    """Every input of a request through the ingest contract, before any model is loaded: a file
    that can never work fails the request at once, with the reason codes and their fixes.

    Raises:
        PipelineError: naming up to five rejected files (exit code 2).
    """
    rejected = [r for r in (inspect_file(p, limits) for p in paths) if isinstance(r, QuarantineRecord)]
    if rejected:
        lines = [f"{r.path}: {r.reasons[0]}" for r in rejected[:5]]
        more = f" (and {len(rejected) - 5} more)" if len(rejected) > 5 else ""
        raise PipelineError(f"{len(rejected)} of {len(paths)} inputs break the NIfTI contract{more}:\n  "
                            + "\n  ".join(lines), fix="fix or leave out these files; nothing was generated",
                            exit_code=2)

def assemble(
    results: Iterable[VolumeHeader | QuarantineRecord],
    sources: Sequence[str],
    limits: VolumeLimits,
    fractions: SplitFractions,
) -> tuple[Manifest, QuarantineReport]:
    """Group accepted volumes by content (first path wins, others listed as duplicates),
    assign splits by BIDS subject (or, without one, by content hash), and collect the quarantine."""
    by_sha: dict[str, list[VolumeHeader]] = {}
    rejected: list[QuarantineRecord] = []
    for result in results:
        if isinstance(result, QuarantineRecord):
            rejected.append(result)
        else:
            by_sha.setdefault(result.sha256, []).append(result)
    rows = []
    for sha, headers in by_sha.items():
        headers.sort(key=lambda h: h.path)
        subject = subject_of(headers[0].path)
        rows.append(
            ManifestRow(
                id=sha[:16],
                split=split_for(sha, fractions, subject),
                split_by="subject" if subject else "content",
                subject=subject,
                header=headers[0],
                duplicates=tuple(
                    DuplicateFile(path=h.path, size_bytes=h.size_bytes, mtime_ns=h.mtime_ns)
                    for h in headers[1:]
                ),
            )
        )
    rows.sort(key=lambda r: r.header.path)
    rejected.sort(key=lambda r: r.path)
    manifest = Manifest(sources=tuple(sources), limits=limits, fractions=fractions, rows=tuple(rows))
    return manifest, QuarantineReport(records=tuple(rejected))
