"""Preprocess flow: every accepted volume to a cached training tensor, plus the dataset index."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import as_completed
from tqdm.auto import tqdm

from data_contracts import (
    DatasetIndex,
    IndexItem,
    Manifest,
    ManifestRow,
    PipelineError,
    QuarantineRecord,
    QuarantineReport,
    Reason,
)
from data_contracts.paths import PathEscape, confine
from flows.locks import exclusive
from flows.runners import chunks, retry_unless_user_error, task_runner
from flows.settings import PreprocessSettings, Settings
from flows.workspace import Workspace, route_library_logs
from vae3d.files import remove_stale_temporaries
from vae3d.preprocessing import PreprocessCache, build_preprocess, template_affine
from vae3d.preprocessing.stage import montage, preprocess_row


@task(retries=1, retry_condition_fn=retry_unless_user_error, retry_delay_seconds=1, task_run_name="preprocess-batch")
def preprocess_batch(
    rows: list[ManifestRow], cfg: PreprocessSettings, cache_root: str
) -> list[tuple[IndexItem | QuarantineRecord, bool]]:
    chain = build_preprocess(**cfg.model_dump())
    cache = PreprocessCache(cache_root)
    return [preprocess_row(row, chain, cache) for row in rows]


@task
def publish(index: DatasetIndex, rejected: list[QuarantineRecord], hits: int, png: str) -> None:
    counts = index.counts()
    create_table_artifact(
        key="preprocess-counts",
        table=[
            {"split": k, "volumes": v} for k, v in counts.items()
        ] + [{"split": "quarantined", "volumes": len(rejected)}, {"split": "cache hits", "volumes": hits}],
        description=f"settings key {index.settings_key}",
    )
    data = base64.b64encode(Path(png).read_bytes()).decode()
    create_markdown_artifact(
        key="preprocess-montage",
        markdown=f"# Preprocessed volumes (mid-slices)\n\n`{png}`\n\n![montage](data:image/png;base64,{data})",
    )


@flow(name="preprocess")
def preprocess_flow(settings: Settings, allow_shrink: bool = False) -> DatasetIndex:
    """Turn every manifest row into a cached (1, D, H, W) tensor; write ``dataset_index.json``.

    An index with fewer volumes than the one it replaces, from a manifest that did not
    shrink (scans gone missing since ingest), is an error unless ``allow_shrink``.
    """
    route_library_logs()
    ws = Workspace.at(settings.workspace)
    with exclusive(ws.locks / "preprocess.lock", f"workspace {ws.root} (another preprocess)"):
        return _preprocess(settings, ws, allow_shrink)


def read_manifest(ws: Workspace) -> tuple[Manifest, str]:
    """The manifest and the sha256 of the very bytes parsed, read under the ingest lock: the
    index then names the manifest it was built from, even while an ingest runs."""
    path = ws.require_manifest()
    with exclusive(ws.locks / "ingest.lock", f"workspace {ws.root} (an ingest is writing the manifest)"):
        raw = path.read_bytes()
    return Manifest.parse(raw, path), hashlib.sha256(raw).hexdigest()


def _preprocess(settings: Settings, ws: Workspace, allow_shrink: bool) -> DatasetIndex:
    logger = get_run_logger()
    manifest, manifest_sha256 = read_manifest(ws)
    cfg = settings.preprocess
    cache_root = ws.preprocess_cache(cfg.key())
    stale = remove_stale_temporaries(cache_root)  # a killed preprocess's partial files (we hold the lock)
    if stale:
        logger.info("removed %d partial cache files left by an interrupted preprocess", len(stale))
    rows, rejected = [], []
    for row in manifest.rows:  # the roots come from settings: an edited manifest cannot widen them
        try:
            confine(row.header.path, settings.roots(), what="manifest path")
            rows.append(row)
        except PathEscape as exc:
            rejected.append(QuarantineRecord(
                path=row.header.path, sha256=row.header.sha256, size_bytes=row.header.size_bytes,
                mtime_ns=row.header.mtime_ns, stage="preprocess", reasons=(Reason.of("path_escape", str(exc)),)))
    futures = preprocess_batch.map(chunks(rows, 4), unmapped(cfg), unmapped(str(cache_root))) if rows else []
    items, hits = [], 0
    with tqdm(total=len(rows), desc="preprocessing", unit="vol", disable=None) as bar:
        for future in as_completed(futures):
            for result, hit in future.result():
                (rejected if isinstance(result, QuarantineRecord) else items).append(result)
                hits += hit
            bar.update(len(future.result()))
    items.sort(key=lambda i: i.source_path)
    before = len(DatasetIndex.read(ws.dataset_index).items) if ws.dataset_index.exists() else 0
    if len(items) < min(before, len(manifest.rows)) and not allow_shrink:
        raise PipelineError(
            f"this preprocess would shrink the dataset index from {before} to {len(items)} volumes "
            f"({len(rejected)} rejected"
            f"{', e.g. ' + rejected[0].path + ': ' + str(rejected[0].reasons[0]) if rejected else ''})",
            where=str(ws.dataset_index),
            fix="check that the ingested scans are still readable where the manifest says (a missing mount?); "
                "to drop them on purpose, re-run with --allow-shrink. Nothing was written")
    index = DatasetIndex(
        manifest_sha256=manifest_sha256, settings_key=cfg.key(),
        settings=cfg.model_dump(mode="json"), target_shape=cfg.target_shape,
        target_spacing=cfg.target_spacing,
        template_affine=template_affine(cfg.target_shape, cfg.target_spacing).tolist(),
        items=tuple(items),
    )
    index.write(ws.dataset_index)
    rejected_report = QuarantineReport(records=tuple(sorted(rejected, key=lambda r: r.path)))
    rejected_report.write(ws.root / "quarantine_preprocess.json")
    cache = PreprocessCache(cache_root)
    sample = [cache.load(i.source_sha256) for i in items[:4]]
    png = montage([s for s in sample if s is not None], ws.figures / "preprocess_montage.png") if items else None
    if png is not None:
        publish(index, rejected, hits, str(png))
    logger.info(
        "preprocessed %d volumes (%d from cache, %d quarantined) -> %s",
        len(items), hits, len(rejected), ws.dataset_index,
    )
    return index


def run_preprocess(settings: Settings, allow_shrink: bool = False) -> DatasetIndex:
    return preprocess_flow.with_options(task_runner=task_runner(settings.prefect))(settings, allow_shrink)
