"""Ingest flow: validate every source file in parallel, write manifest + quarantine."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import as_completed
from tqdm.auto import tqdm

from data_contracts import Manifest, PipelineError, QuarantineRecord, QuarantineReport, VolumeHeader, VolumeLimits
from flows.locks import exclusive
from flows.runners import chunks, retry_unless_user_error, task_runner
from flows.settings import Settings
from flows.workspace import Workspace, route_library_logs
from vae3d import ingest as lib
from vae3d.files import remove_stale_temporaries


@task(retries=2, retry_condition_fn=retry_unless_user_error, retry_delay_seconds=1, task_run_name="inspect-batch")
def inspect_batch(paths: list[str], limits: VolumeLimits) -> list[VolumeHeader | QuarantineRecord]:
    """Validate a batch of files (one task per batch keeps the API chatter small)."""
    return [lib.inspect_file(p, limits) for p in paths]


@task
def publish_summary(manifest: Manifest, quarantine: QuarantineReport, reused: int) -> str:
    rows = [{"status": "accepted", "split": r.split, "path": r.header.path, "reasons": ""} for r in manifest.rows]
    rows += [
        {"status": "quarantined", "split": "", "path": q.path, "reasons": "; ".join(str(x) for x in q.reasons)}
        for q in quarantine.records
    ]
    create_table_artifact(key="ingest-files", table=rows, description="Every file the ingest saw")
    counts = manifest.counts()
    dups = sum(len(r.duplicates) for r in manifest.rows)
    md = [
        "# Ingest summary",
        f"- accepted: **{len(manifest.rows)}** (train {counts['train']}, val {counts['val']}, test {counts['test']})",
        f"- quarantined: **{len(quarantine.records)}**",
        f"- duplicate content under another name: {dups}",
        f"- reused from the previous run without re-reading: {reused}",
        "",
        "| reason | files |",
        "|---|---|",
        *[f"| {code} | {n} |" for code, n in quarantine.reason_counts().items()],
    ]
    return create_markdown_artifact(key="ingest-summary", markdown="\n".join(md))


@flow(name="ingest", log_prints=False)
def ingest_flow(sources: list[str], settings: Settings,
                allow_shrink: bool = False) -> tuple[Manifest, QuarantineReport]:
    """Validate every NIfTI file under ``sources``; write ``manifest.json`` and ``quarantine.json``.

    A source with no volumes at all is an error, and so is a manifest with fewer rows than
    the one it would replace (a missing mount must not empty the dataset), unless
    ``allow_shrink``; then nothing is written.
    """
    route_library_logs()
    ws = Workspace.at(settings.workspace).ensure()
    with exclusive(ws.locks / "ingest.lock", f"workspace {ws.root} (another ingest)"):
        remove_stale_temporaries(ws.root)
        return _ingest(sources, settings, ws, allow_shrink)


def _ingest(sources: list[str], settings: Settings, ws: Workspace,
            allow_shrink: bool) -> tuple[Manifest, QuarantineReport]:
    logger = get_run_logger()
    cfg = settings.ingest
    limits = cfg.limits()
    for source in sources:  # before anything is read: preprocess will only read inside these roots
        settings.confine(source, what="ingest source")
    paths, refused = lib.discover([Path(s) for s in sources], cfg.exclude, settings.roots())
    if not paths and not refused:
        raise PipelineError(
            f"found no NIfTI volumes (.nii/.nii.gz) in {', '.join(sources)}", where="ingest sources",
            fix="check the path (is the folder mounted?) and that it holds .nii/.nii.gz files or a .csv/.json "
                "list of them; the manifest was left as it was")
    previous = lib.load_previous(ws.manifest, ws.quarantine)
    results, todo = [lib.refused_record(*r) for r in refused], []
    for path in paths:
        src = lib.SourceFile.stat(path)
        prior = previous.get(src.path)
        if prior is not None and lib.unchanged(prior, src):
            results.append(prior)
        else:
            todo.append(src.path)
    reused = len(results) - len(refused)
    logger.info("found %d files: %d unchanged since the last run, %d to validate", len(paths), reused, len(todo))
    futures = inspect_batch.map(chunks(todo, cfg.batch_size), unmapped(limits)) if todo else []
    with tqdm(total=len(todo), desc="validating", unit="file", disable=None) as bar:
        for future in as_completed(futures):
            batch = future.result()
            results.extend(batch)
            bar.update(len(batch))
    manifest, quarantine = lib.assemble(results, [str(Path(s).resolve()) for s in sources], limits, cfg.fractions)
    old = lib.readable(Manifest, ws.manifest)
    before = len(old.rows) if old is not None else 0
    if len(manifest.rows) < before and not allow_shrink:
        raise PipelineError(
            f"this ingest would shrink the dataset from {before} to {len(manifest.rows)} accepted scans "
            f"({len(quarantine.records)} quarantined)", where=str(ws.manifest),
            fix="check that every source is given and mounted; if scans were removed on purpose, re-run with "
                "--allow-shrink. Nothing was written")
    manifest.write(ws.manifest)
    quarantine.write(ws.quarantine)
    publish_summary(manifest, quarantine, reused)
    logger.info("accepted %d, quarantined %d -> %s", len(manifest.rows), len(quarantine.records), ws.manifest)
    return manifest, quarantine


def run_ingest(sources: list[str], settings: Settings, allow_shrink: bool = False) -> tuple[Manifest, QuarantineReport]:
    """Run the flow with the task runner the settings ask for."""
    return ingest_flow.with_options(task_runner=task_runner(settings.prefect))(sources, settings, allow_shrink)
