"""Batch generation: synthetic, augment, denoise, anomaly and embed, as one Prefect flow.

Work is split into batches (one task each, mapped over the task runner); each task loads the
pinned model once per process, skips outputs already complete on disk, and writes every
output with its provenance sidecar atomically. The run manifest lists every output of the
request with its checksum.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.futures import as_completed
from tqdm.auto import tqdm

from data_contracts import PipelineError, QuarantineRecord
from data_contracts.generation import GenerationRequest, ModelRef, OutputRecord, RunManifest
from flows import interrupts, model_loader, resources
from flows.locks import exclusive
from flows.registry import code_version
from flows.runners import chunks, retry_unless_user_error, task_runner
from flows.settings import PrefectSettings, Settings
from flows.workspace import Workspace
from vae3d import inference, io
from vae3d.generation import latent_variants, quantize, synthesize
from vae3d.outputs import complete, write_sidecar, write_volume
from vae3d.preprocessing import build_preprocess, to_original_space
from vae3d.preprocessing.inputs import prepare_input, super_resolution_grid, to_input_scale
from vae3d.preprocessing.augment import augment, build_augment

# a synthetic task decodes 8 to 64 batches: each Prefect task run costs tens of ms of
# orchestration, and about two tasks per worker still spread the work and bound a retry
SYNTH_TASK_BATCHES = (8, 64)
SUFFIX = {"augment": "aug", "denoise": "denoised", "super-resolve": "superres", "anomaly": "anomaly"}


def _stem(path: str) -> str:
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _provenance(req: GenerationRequest, ref: ModelRef, index: int, **extra) -> dict:
    params = req.model_dump(mode="json", exclude={"inputs", "model_uri", "mode", "seed"})
    params.update(extra.pop("parameters", {}))
    return {"mode": req.mode, "model": ref, "seed": req.seed, "index": index, "parameters": params,
            "package_version": code_version(), **extra}


def _expect(req: GenerationRequest, ref: ModelRef, index: int | None = None, input_sha256: str | None = None) -> dict:
    """What the sidecar of an output of ``req`` must record for the output to be reused."""
    out = {"mode": req.mode, "seed": req.seed, "parameters": req.parameters(),
           "model": {"version": ref.version, "weights_sha256": ref.weights_sha256}}
    if index is not None:
        out["index"] = index
    if input_sha256 is not None:
        out["input_sha256"] = input_sha256
    return out


def output_stems(paths: Sequence[str]) -> tuple[dict[str, str], tuple[str, ...]]:
    """Each input's output file stem: its own name, or, where another input has the same
    name (sub-001_T1w from two sites), the name with a ``src-<hash of the input path>``
    entity. Returns (stem by path, the inputs that got the entity)."""
    counts = Counter(_stem(p) for p in paths)
    stems, renamed = {}, []
    for p in paths:
        stem = _stem(p)
        if counts[stem] > 1:
            tag = hashlib.sha256(str(Path(p).resolve()).encode()).hexdigest()[:8]
            stem = f"{stem}_src-{tag}"
            renamed.append(p)
        stems[p] = stem
    return stems, tuple(renamed)


@task(retries=2, retry_condition_fn=retry_unless_user_error, retry_delay_seconds=2, task_run_name="synthetic-batch")
def synthetic_batch(indices: list[int], req: GenerationRequest, ref: ModelRef, settings: Settings,
                    out_dir: str) -> tuple[list[OutputRecord], int, int]:
    """Decode ``indices`` in sub-batches of ``req.batch_size`` on the model lanes; the
    process's writer threads write each sub-batch while the next ones decode
    (``flows.resources``). Returns (records, reused, regenerated)."""
    paths = {i: Path(out_dir) / f"synthetic_seed{req.seed}_{i:06d}.nii.gz" for i in indices}
    done = {i: complete(p, _expect(req, ref, i)) for i, p in paths.items()}
    stale = sum(done[i] is None and p.exists() for i, p in paths.items())
    if all(done.values()):
        return list(done.values()), len(done), 0
    wrapper = model_loader.load(ref, settings)
    affine = np.asarray(wrapper.meta["template_affine"])

    def write(group: list[int], vols: torch.Tensor | None) -> list[OutputRecord]:
        if vols is None:  # interrupted before this sub-batch was decoded
            return [done[i] for i in group if done[i]]
        return [done[i] or write_volume(paths[i], v[0].numpy(), affine, _provenance(req, ref, i), **_stored(req))
                for i, v in zip(group, vols)]

    groups = chunks(indices, req.batch_size)
    # a whole sub-batch is regenerated, so its composition (and so its floating-point
    # result) never depends on what an interrupted run left behind
    todo = [g for g in groups if not all(done[i] for i in g)]
    decoded = resources.model_map(lambda g: None if interrupts.stop_requested() else _decode(wrapper.model, g, req),
                                  todo, settings.generate.model_lanes)
    writers = resources.resolve_writers(settings.generate.writers, wrapper.model.device)
    writes = [resources.submit_write(write, group, vols, writers=writers) for group, vols in zip(todo, decoded)]
    records = [r for w in writes for r in w.result()]
    records += [done[i] for g in groups if all(done[i] for i in g) for i in g]
    return records, sum(d is not None for d in done.values()), stale


def _decode(model, group: list[int], req: GenerationRequest) -> torch.Tensor:
    vols = synthesize(model, group, req.seed, req.temperature)
    return quantize(vols) if req.dtype == "int16" else vols


def _stored(req: GenerationRequest, image: bool = True) -> dict:
    """How output volumes are stored: anomaly maps (scores, not images) stay float32."""
    return {"dtype": req.dtype if image else "float32", "compresslevel": req.compression}


@task(retries=2, retry_condition_fn=retry_unless_user_error, retry_delay_seconds=2, task_run_name="{req.mode}-batch")
def input_batch(items: list[tuple[int, str]], req: GenerationRequest, ref: ModelRef, settings: Settings,
                out_dir: str, stems: dict[str, str]) -> tuple[list[OutputRecord], int, int]:
    """augment / denoise / super-resolve / anomaly for a batch of (input index, path), each
    written as ``stems[path]`` plus the mode's suffix. Returns (records, reused, regenerated)."""
    k = req.variants if req.mode == "augment" else 1
    records, skipped, stale, wrapper, chain, artifacts = [], 0, 0, None, None, None
    for idx, path in items:
        if interrupts.stop_requested():
            break
        stem = stems[path]
        names = ([f"{stem}_{SUFFIX['augment']}{v:03d}.nii.gz" for v in range(k)]
                 if req.mode == "augment" else [f"{stem}_{SUFFIX[req.mode]}.nii.gz"])
        outs = [Path(out_dir) / n for n in names]
        input_sha = io.sha256_file(Path(path))
        done = [complete(o, _expect(req, ref, idx * k + v if req.mode == "augment" else None, input_sha))
                for v, o in enumerate(outs)]
        stale += sum(d is None and o.exists() for d, o in zip(done, outs))
        if all(done):
            records += done
            skipped += len(done)
            continue
        if wrapper is None:
            wrapper = model_loader.load(ref, settings)
            chain = build_preprocess(**wrapper.meta["preprocess"])
            artifacts = build_augment(prob=0.8) if req.artifacts else None
        prep = prepare_input(Path(path), chain, keep_original=req.mode == "super-resolve" and req.fusion)
        x, affine = prep.x, prep.affine
        base = dict(input_path=path, input_sha256=prep.sha256)
        if req.mode == "augment":
            vols = resources.model_call(latent_variants, wrapper.model, x, [idx * k + v for v in range(k)],
                                        req.seed, req.latent_scale, lanes=settings.generate.model_lanes)
            for v, (out, vol, prior) in enumerate(zip(outs, vols, done)):
                if prior:
                    records.append(prior)
                    skipped += 1
                    continue
                if artifacts is not None:
                    vol = augment(artifacts, vol, seed=req.seed * 7919 + idx * k + v)
                records.append(write_volume(out, vol[0].numpy(), affine, _provenance(req, ref, idx * k + v, **base),
                                            **_stored(req)))
            continue
        restore = inference.reconstruct_shift_averaged if req.mode == "super-resolve" else inference.reconstruct
        recon = resources.model_call(restore, wrapper.model, x, lanes=settings.generate.model_lanes)
        grid_affine, grid_shape = prep.original_affine, prep.original_shape
        if req.mode in ("denoise", "super-resolve"):
            result, extra = recon, {"parameters": {"intensity_range": list(prep.intensity_range)}}
            rmse = wrapper.meta.get("restoration", {}).get("model_rmse")
            if req.mode == "denoise" and req.fusion and rmse is not None:
                sigma = inference.noise_sigma(x)
                result = inference.fuse(x, recon, rmse, sigma=sigma)
                extra["parameters"].update(noise_sigma=float(sigma[0]), model_rmse=rmse)
            if req.mode == "super-resolve":
                grid_affine, grid_shape = super_resolution_grid(
                    prep.original_affine, prep.original_shape, wrapper.meta["target_spacing"], req.factor)
        else:
            amap = inference.anomaly_map(x, recon)
            score = float(inference.anomaly_score(amap)[0])
            thresholds = wrapper.meta.get("anomaly", {})
            flagged = score > thresholds["score_threshold"] if "score_threshold" in thresholds else None
            result, extra = amap, {"parameters": {"score": score, "flagged": flagged, **thresholds}}
        back = to_original_space(result[0].numpy(), affine, grid_affine, grid_shape)
        if req.mode == "super-resolve" and req.fusion:  # agree with what the input measured
            back = inference.data_consistent(torch.from_numpy(back)[None, None], prep.measured(),
                                             req.detail_gain)[0, 0].numpy()
            extra["parameters"]["back_projected"] = True
        if req.mode != "anomaly" and req.intensity == "input":
            back = to_input_scale(back, prep.intensity_range)
        records.append(write_volume(outs[0], back, grid_affine, _provenance(req, ref, idx, **base, **extra),
                                    **_stored(req, image=req.mode != "anomaly")))
    return records, skipped, stale


@task(retries=2, retry_condition_fn=retry_unless_user_error, retry_delay_seconds=2, task_run_name="embed-batch")
def embed_batch(items: list[tuple[int, str]], ref: ModelRef, settings: Settings) -> list[dict]:
    wrapper = model_loader.load(ref, settings)
    chain = build_preprocess(**wrapper.meta["preprocess"])
    rows = []
    for idx, path in items:
        prep = prepare_input(Path(path), chain)
        z = resources.model_call(inference.embed, wrapper.model, prep.x, lanes=settings.generate.model_lanes)[0].numpy()
        rows.append({"index": idx, "id": prep.sha256[:16], "path": path, "sha256": prep.sha256,
                     "latent": z.astype(np.float32)})
    return rows


def _write_embeddings(rows: list[dict], labels: dict[str, str], req, ref, out_dir: Path) -> list[OutputRecord]:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sklearn.decomposition import PCA

    from vae3d.figures import embedding_scatter

    rows.sort(key=lambda r: r["index"])
    table = pa.table({
        "id": [r["id"] for r in rows], "path": [r["path"] for r in rows], "sha256": [r["sha256"] for r in rows],
        "label": [labels.get(r["sha256"], labels.get(r["path"], "")) for r in rows],
        "latent": pa.array([r["latent"] for r in rows], type=pa.list_(pa.float32())),
    })
    import io as _io

    import matplotlib.pyplot as plt

    parquet, png = out_dir / "embeddings.parquet", out_dir / "embeddings_pca.png"
    buf = _io.BytesIO()
    pq.write_table(table, buf)
    io.atomic_write_bytes(parquet, buf.getvalue())
    latent = np.stack([r["latent"] for r in rows])
    xy = PCA(n_components=2, random_state=req.seed).fit_transform(latent) if len(rows) >= 2 else np.zeros((len(rows), 2))
    fig = embedding_scatter(xy, table.column("label").to_pylist())
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    io.atomic_write_bytes(png, buf.getvalue())
    prov = _provenance(req, ref, 0, parameters={"n_inputs": len(rows), "projection": "PCA(2)"})
    return [write_sidecar(p, io.sha256_file(p), prov) for p in (parquet, png)]


@flow(name="generate")
def generate_flow(request: GenerationRequest, settings: Settings, out: str | None = None,
                  labels: dict[str, str] | None = None) -> RunManifest:
    """Generate the outputs of ``request``; re-running the same request completes it."""
    logger = get_run_logger()
    interrupts.clear()
    ws = Workspace.at(settings.workspace)
    ref = model_loader.resolve(request.model_uri, settings)
    out_dir = Path(out) if out else ws.outputs / request.mode / request.key(ref)
    out_dir.mkdir(parents=True, exist_ok=True)
    logger.info("%s with %s (v%s) -> %s", request.mode, request.model_uri, ref.version, out_dir)
    with exclusive(out_dir / ".vae3d.lock", f"output folder {out_dir}"):
        stale = io.remove_stale_temporaries(out_dir)
        if stale:
            logger.info("removed %d partial files left by an interrupted run", len(stale))
        stems, renamed = output_stems(request.inputs)
        if renamed:
            logger.warning("%d inputs share a file name with another input; their outputs carry a src- entity: %s",
                           len(renamed), ", ".join(renamed))
        records, skipped, regenerated, interrupted = _run(request, ref, settings, out_dir, labels or {}, stems)
        if regenerated:
            logger.info("%d outputs on disk did not answer this request (another input, model or parameters): "
                        "made again", regenerated)
        manifest = RunManifest(request=request, request_key=request.key(ref), model=ref, outputs=tuple(records),
                               skipped_existing=skipped, regenerated=regenerated, disambiguated=renamed,
                               interrupted=interrupted is not None)
        io.atomic_write_text(out_dir / "run_manifest.json", manifest.model_dump_json(indent=1))
    if interrupted is not None:
        logger.warning("interrupted after %d outputs; the run manifest lists them, the same command finishes the job",
                       len(records))
        raise interrupted
    logger.info("%d outputs (%d already complete) -> %s", len(records), skipped, out_dir / "run_manifest.json")
    return manifest


def _prefect(req: GenerationRequest, settings: Settings) -> PrefectSettings:
    """The task runner's settings for ``req``. Synthetic tasks in threads only feed this
    process's model lanes (``flows.resources``), so one task thread per lane keeps them busy;
    more threads would add nothing but memory (each keeps its own malloc arena)."""
    prefect = settings.prefect
    if req.mode == "synthetic" and prefect.task_runner == "threads":
        lanes = resources.resolve_lanes(settings.generate.model_lanes)
        return prefect.model_copy(update={"max_workers": min(prefect.max_workers, lanes)})
    return prefect


def _task_batches(req: GenerationRequest, settings: Settings) -> int:
    """Decode batches per synthetic task: about two tasks per worker, within SYNTH_TASK_BATCHES."""
    lo, hi = SYNTH_TASK_BATCHES
    per_task = -(-req.n // (req.batch_size * 2 * _prefect(req, settings).max_workers))
    return max(lo, min(hi, per_task))


def _run(req: GenerationRequest, ref: ModelRef, settings: Settings, out_dir: Path, labels: dict,
         stems: dict[str, str]):
    items = list(enumerate(req.inputs))
    if req.mode == "synthetic":
        # tasks start on multiples of batch_size so the decode batches are the same in any run
        batches = chunks(list(range(req.n)), req.batch_size * _task_batches(req, settings))
        futures = synthetic_batch.map(batches, unmapped(req), unmapped(ref), unmapped(settings), unmapped(str(out_dir)))
    elif req.mode == "embed":
        batches = chunks(items, req.batch_size)
        futures = embed_batch.map(batches, unmapped(ref), unmapped(settings))
    else:
        batches = chunks(items, req.batch_size)
        futures = input_batch.map(batches, unmapped(req), unmapped(ref), unmapped(settings), unmapped(str(out_dir)),
                                  unmapped(stems))
    progress = create_progress_artifact(progress=0.0, key=f"generate-{req.mode}",
                                        description=f"{req.mode} {req.key(ref)}")
    interrupted = None
    try:
        with tqdm(total=len(batches), desc=req.mode, unit="batch", disable=None) as bar:
            for n, future in enumerate(as_completed(futures), 1):
                future.wait()
                bar.update(1)
                update_progress_artifact(progress, progress=100.0 * n / len(batches))
    except interrupts.signals() as exc:  # tasks stop between volumes; what they finished is collected below
        interrupts.request_stop()
        interrupts.note(exc)
        interrupted = exc
        for future in futures:
            future.wait()
    results = [f.result() for f in futures]
    if req.mode == "embed":  # one file from every row: an interrupted run writes none
        rows = [r for batch in results for r in batch]
        return ([] if interrupted is not None else _write_embeddings(rows, labels, req, ref, out_dir)), 0, 0, interrupted
    records = sorted((r for recs, _, _ in results for r in recs), key=lambda r: r.path)
    return records, sum(r[1] for r in results), sum(r[2] for r in results), interrupted


def check_inputs(paths: tuple[str, ...], settings: Settings) -> None:
    """Every input through ingest's NIfTI contract, before any model is loaded: a file that can
    never work fails the request at once, with ingest's reason codes and their fixes."""
    from vae3d.ingest import inspect_file

    limits = settings.ingest.limits()
    rejected = [r for r in (inspect_file(p, limits) for p in paths) if isinstance(r, QuarantineRecord)]
    if rejected:
        lines = [f"{r.path}: {r.reasons[0]}" for r in rejected[:5]]
        more = f" (and {len(rejected) - 5} more)" if len(rejected) > 5 else ""
        raise PipelineError(f"{len(rejected)} of {len(paths)} inputs break the NIfTI contract{more}:\n  "
                            + "\n  ".join(lines), fix="fix or leave out these files; nothing was generated",
                            exit_code=2)


def run_generate(request: GenerationRequest, settings: Settings, out: str | None = None,
                 labels: dict[str, str] | None = None) -> RunManifest:
    """Every entry point (CLI, deployments, scheduled runs) comes through here: inputs and ``out``
    are confined to the settings' roots before anything is read or written."""
    for path in request.inputs:
        settings.confine(path, what="generate input")
    if out is not None:
        out = str(settings.confine(out, what="generate --out"))
    check_inputs(request.inputs, settings)
    model_loader.resolve(request.model_uri, settings)  # a missing model fails here, before the flow starts
    return generate_flow.with_options(task_runner=task_runner(_prefect(request, settings)))(request, settings, out, labels)
