"""Batch generation: synthetic, augment, denoise, super-resolve, anomaly and embed, as one Prefect flow.

A request is split into batches, one task each, mapped over the task runner; a mode is one
entry of ``MODES``: the task that makes a batch, how the request splits into batches, and,
for an input mode, the library function that makes one input's outputs (``vae3d.modes``).
Re-running the same request reuses the outputs already complete; the run manifest lists
every output of the request with its checksum.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prefect import flow, get_run_logger, task, unmapped
from prefect.runtime import flow_run

from data_contracts.generation import GenerationRequest, ModelRef, RunManifest
from flows import batches, interrupts, model_loader
from flows.batches import Batch
from flows.locks import exclusive
from flows.registry import code_version
from flows.runners import chunks, retry_unless_user_error, task_runner, wait_all
from flows.settings import Settings
from flows.workspace import Workspace, route_library_logs
from vae3d import modes
from vae3d.files import remove_stale_temporaries
from vae3d.ingest import check_inputs
from vae3d.outputs import output_stems, provenance, write_dataset_description, write_embeddings

RETRY = {"retries": 2, "retry_condition_fn": retry_unless_user_error, "retry_delay_seconds": 2}


@task(**RETRY, task_run_name="synthetic-batch")
def synthetic_batch(indices: list[int], req: GenerationRequest, ref: ModelRef, settings: Settings, out_dir: str,
                    stems: dict[str, str], make: Callable | None) -> Batch:
    return batches.synthetic(indices, req, ref, settings, out_dir)


@task(**RETRY, task_run_name="{req.mode}-batch")
def input_batch(items: list[tuple[int, str]], req: GenerationRequest, ref: ModelRef, settings: Settings,
                out_dir: str, stems: dict[str, str], make: Callable) -> Batch:
    return batches.per_input(items, req, ref, settings, out_dir, stems, make)


@task(**RETRY, task_run_name="embed-batch")
def embed_batch(items: list[tuple[int, str]], req: GenerationRequest, ref: ModelRef, settings: Settings,
                out_dir: str, stems: dict[str, str], make: Callable | None) -> Batch:
    return batches.embed(items, ref, settings)


def _by_input(req: GenerationRequest, settings: Settings) -> list:
    return chunks(list(enumerate(req.inputs)), req.batch_size)


@dataclass(frozen=True)
class Mode:
    task: object  # the Prefect task that makes one batch
    split: Callable[[GenerationRequest, Settings], list] = _by_input
    make: Callable | None = None  # an input mode's library function (``vae3d.modes``)


MODES: dict[str, Mode] = {
    "synthetic": Mode(synthetic_batch, batches.synthetic_split),
    "embed": Mode(embed_batch),
    **{name: Mode(input_batch, make=make) for name, make in modes.INPUT_MODES.items()},
}


def run_name() -> str:
    """A generate run's name in the Prefect UI: its mode and what it asks for
    (``generate-denoise-12-inputs-seed0``, ``generate-synthetic-500-seed3``)."""
    req = flow_run.parameters["request"]
    req = req if isinstance(req, GenerationRequest) else GenerationRequest.model_validate(req)
    what = f"{req.n}" if req.mode == "synthetic" else f"{len(req.inputs)}-inputs"
    return f"generate-{req.mode}-{what}-seed{req.seed}"


@flow(name="generate", flow_run_name=run_name)
def generate_flow(request: GenerationRequest, settings: Settings, out: str | None = None,
                  labels: dict[str, str] | None = None) -> RunManifest:
    """Generate the outputs of ``request``; re-running the same request completes it."""
    route_library_logs()
    logger = get_run_logger()
    interrupts.clear()
    ref = model_loader.resolve(request.model_uri, settings)
    out_dir = Path(out) if out else Workspace.at(settings.workspace).outputs / request.mode / request.key(ref)
    out_dir.mkdir(parents=True, exist_ok=True)
    logger.info("%s with %s (v%s) -> %s", request.mode, request.model_uri, ref.version, out_dir)
    with exclusive(out_dir / ".vae3d.lock", f"output folder {out_dir}"):
        if stale := remove_stale_temporaries(out_dir):
            logger.info("removed %d partial files left by an interrupted run", len(stale))
        write_dataset_description(out_dir, request.mode, code_version(), f"{ref.name} v{ref.version}",
                                  [str(Path(p).parent) for p in request.inputs])
        stems, renamed = output_stems(request.inputs)
        if renamed:
            logger.warning("%d inputs share a file name with another input; their outputs carry a src- entity: %s",
                           len(renamed), ", ".join(renamed))
        done, interrupted = _run(request, ref, settings, out_dir, stems)
        if request.mode == "embed":  # one file from every row: an interrupted run writes none
            prov = provenance(request, ref, 0, code_version())
            done = Batch() if interrupted else Batch(write_embeddings(done.rows, labels or {}, out_dir,
                                                                      request.seed, prov))
        if done.regenerated:
            logger.info("%d outputs on disk did not answer this request (another input, model or parameters): "
                        "made again", done.regenerated)
        manifest = RunManifest(request=request, request_key=request.key(ref), model=ref, outputs=tuple(done.records),
                               skipped_existing=done.reused, regenerated=done.regenerated, disambiguated=renamed,
                               interrupted=interrupted is not None)
        manifest.write(out_dir / "run_manifest.json")
    if interrupted is not None:
        logger.warning("interrupted after %d outputs; the run manifest lists them, the same command finishes the job",
                       len(done.records))
        raise interrupted
    logger.info("%d outputs (%d already complete) -> %s", len(done.records), done.reused, out_dir / "run_manifest.json")
    return manifest


def _run(req: GenerationRequest, ref: ModelRef, settings: Settings, out_dir: Path,
         stems: dict[str, str]) -> tuple[Batch, BaseException | None]:
    """Every batch of ``req`` through its mode's task; their results merged (records by path)."""
    mode = MODES[req.mode]
    parts = mode.split(req, settings)
    futures = mode.task.map(parts, unmapped(req), unmapped(ref), unmapped(settings), unmapped(str(out_dir)),
                            unmapped(stems), unmapped(mode.make))
    interrupted = wait_all(futures, req.mode, f"generate-{req.mode}", f"{req.mode} {req.key(ref)}")
    results = [f.result() for f in futures]
    records = sorted((r for b in results for r in b.records), key=lambda r: r.path)
    return Batch(records, sum(b.reused for b in results), sum(b.regenerated for b in results),
                 [row for b in results for row in b.rows]), interrupted


def run_generate(request: GenerationRequest, settings: Settings, out: str | None = None,
                 labels: dict[str, str] | None = None) -> RunManifest:
    """Every entry point (CLI, deployments, scheduled runs) comes through here: inputs and ``out``
    are confined to the settings' roots before anything is read or written."""
    for path in request.inputs:
        settings.confine(path, what="generate input")
    if out is not None:
        out = str(settings.confine(out, what="generate --out"))
    check_inputs(request.inputs, settings.ingest.limits())
    model_loader.resolve(request.model_uri, settings)  # a missing model fails here, before the flow starts
    runner = task_runner(batches.generate_prefect(request, settings))
    return generate_flow.with_options(task_runner=runner)(request, settings, out, labels)
