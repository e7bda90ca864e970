"""How one batch of a generate request is made, inside its Prefect task: reuse the outputs
already complete on disk, load the pinned model once per process, make the rest with a
library call (``vae3d.modes``, ``vae3d.generation``) and write each with its sidecar.

Model calls share the process's model lanes and writes its writer threads
(``flows.resources``); an interrupt stops a batch between volumes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch

from data_contracts.generation import GenerationRequest, ModelRef, OutputRecord
from flows import interrupts, model_loader, resources
from flows.registry import code_version
from flows.runners import chunks
from flows.settings import PrefectSettings, Settings
from vae3d import files, inference
from vae3d.generation import quantize, synthesize
from vae3d.outputs import (
    complete,
    expectation,
    input_outputs,
    provenance,
    stored,
    stored_dtype,
    synthetic_output,
    write_volume,
)
from vae3d.preprocessing import build_preprocess
from vae3d.preprocessing.inputs import prepare_input

# a synthetic task decodes 8 to 64 batches: each Prefect task run costs tens of ms of
# orchestration, and about two tasks per worker still spread the work and bound a retry
SYNTH_TASK_BATCHES = (8, 64)


def generate_prefect(req: GenerationRequest, settings: Settings) -> PrefectSettings:
    """The task runner's settings for ``req``. Synthetic tasks in threads only feed this
    process's model lanes (``flows.resources``), so one task thread per lane keeps them busy;
    more threads would add nothing but memory (each keeps its own malloc arena)."""
    prefect = settings.prefect
    if req.mode == "synthetic" and prefect.task_runner == "threads":
        lanes = resources.resolve_lanes(settings.generate.model_lanes)
        return prefect.model_copy(update={"max_workers": min(prefect.max_workers, lanes)})
    return prefect


def synthetic_split(req: GenerationRequest, settings: Settings) -> list[list[int]]:
    """The output indices of each synthetic task: about two tasks per worker, each of
    SYNTH_TASK_BATCHES decode batches; tasks start on multiples of ``batch_size``, so the decode
    batches are the same in any run."""
    lo, hi = SYNTH_TASK_BATCHES
    per_task = -(-req.n // (req.batch_size * 2 * generate_prefect(req, settings).max_workers))
    return chunks(list(range(req.n)), req.batch_size * max(lo, min(hi, per_task)))


@dataclass
class Batch:
    """What a batch task returns: the records of its outputs, how many were reused as they
    were on disk, and how many on disk did not answer the request and were made again."""

    records: list[OutputRecord] = field(default_factory=list)
    reused: int = 0
    regenerated: int = 0
    rows: list[dict] = field(default_factory=list)  # embed: one row per input


class _Model:
    """The pinned model and its preprocessing chain, loaded on first use (a batch whose
    outputs are all complete never loads it)."""

    def __init__(self, ref: ModelRef, settings: Settings):
        self.ref, self.settings, self._wrapper, self._chain, self.meta = ref, settings, None, None, {}

    def load(self):
        if self._wrapper is None:
            self._wrapper = model_loader.load(self.ref, self.settings)
            self._chain = build_preprocess(**self._wrapper.meta["preprocess"])
            # what a mode reads: the registered metadata, the anomaly statistics and the prior (None: registered
            # before them), and the anomaly restorer
            self.meta = {**self._wrapper.meta, "healthy": getattr(self._wrapper, "healthy", None),
                         "prior_model": getattr(self._wrapper, "prior", None),  # the fitted prior itself
                         "anomaly_model": self._wrapper.restorer}
        return self._wrapper

    def prepare(self, path: str):
        self.load()
        return prepare_input(Path(path), self._chain)

    def call(self, fn: Callable, *args):
        return resources.model_call(fn, *args, lanes=self.settings.generate.model_lanes)


def per_input(items: list[tuple[int, str]], req: GenerationRequest, ref: ModelRef, settings: Settings,
              out_dir: str, stems: dict[str, str], make: Callable) -> Batch:
    """Each (input index, path) through the mode's library function ``make``; its outputs are
    named by ``vae3d.outputs.input_outputs`` after ``stems[path]``."""
    batch, model = Batch(), _Model(ref, settings)
    for idx, path in items:
        if interrupts.stop_requested():
            break
        outs = input_outputs(Path(out_dir), stems[path], req)
        input_sha = files.sha256_file(Path(path))
        first = idx * len(outs) if req.mode == "augment" else None
        done = [complete(o, expectation(req, ref, None if first is None else first + v, input_sha))
                for v, o in enumerate(outs)]
        batch.regenerated += sum(d is None and o.exists() for d, o in zip(done, outs, strict=True))
        batch.reused += sum(d is not None for d in done)
        if all(done):
            batch.records += done
            continue
        prep = model.prepare(path)
        products = make(model.load().model, model.meta, prep, idx, req, model.call)
        base = {"input_path": path, "input_sha256": prep.sha256}
        for out, prior, p in zip(outs, done, products, strict=True):
            params = {**p.parameters, **stored_dtype(req, image=p.image)}
            batch.records.append(prior or write_volume(
                out, p.array, p.affine, provenance(req, ref, p.index, code_version(), **base, parameters=params),
                **stored(req, image=p.image), codes=p.codes))
    return batch


def synthetic(indices: list[int], req: GenerationRequest, ref: ModelRef, settings: Settings, out_dir: str) -> Batch:
    """Decode ``indices`` in sub-batches of ``req.batch_size`` on the model lanes; the process's
    writer threads write each sub-batch while the next ones decode (``flows.resources``)."""
    paths = {i: synthetic_output(Path(out_dir), req.seed, i) for i in indices}
    done = {i: complete(p, expectation(req, ref, i)) for i, p in paths.items()}
    reused = sum(d is not None for d in done.values())
    stale = sum(done[i] is None and p.exists() for i, p in paths.items())
    if all(done.values()):
        return Batch(list(done.values()), reused, 0)
    wrapper = model_loader.load(ref, settings)
    affine = np.asarray(wrapper.meta["template_affine"])

    def write(group: list[int], vols: torch.Tensor | None) -> list[OutputRecord]:
        if vols is None:  # interrupted before this sub-batch was decoded
            return [done[i] for i in group if done[i]]
        return [done[i] or write_volume(paths[i], v[0].numpy(), affine, provenance(req, ref, i, code_version()),
                                        **stored(req)) for i, v in zip(group, vols, strict=True)]

    groups = chunks(indices, req.batch_size)
    # a whole sub-batch is regenerated, so its composition (and so its floating-point
    # result) never depends on what an interrupted run left behind
    todo = [g for g in groups if not all(done[i] for i in g)]
    decode = partial(_decode, wrapper.model, getattr(wrapper, "prior", None), req)  # no prior: an older version
    decoded = resources.model_map(lambda g: None if interrupts.stop_requested() else decode(g), todo,
                                  settings.generate.model_lanes)
    writers = resources.resolve_writers(settings.generate.writers, wrapper.model.device)
    writes = [resources.submit_write(write, group, vols, writers=writers)
              for group, vols in zip(todo, decoded, strict=True)]
    records = [r for w in writes for r in w.result()]
    records += [done[i] for g in groups if all(done[i] for i in g) for i in g]
    return Batch(records, reused, stale)


def _decode(model, prior, req: GenerationRequest, group: list[int]) -> torch.Tensor:
    vols = synthesize(model, group, req.seed, req.temperature, prior)
    return quantize(vols) if req.dtype == "int16" else vols


def embed(items: list[tuple[int, str]], ref: ModelRef, settings: Settings) -> Batch:
    """One row per input: its index, id, path, sha256 and latent mean (float32)."""
    model, rows = _Model(ref, settings), []
    for idx, path in items:
        prep = model.prepare(path)
        z = model.call(inference.embed, model.load().model, prep.x)[0].numpy()
        rows.append({"index": idx, "id": prep.sha256[:16], "path": path, "sha256": prep.sha256,
                     "latent": z.astype(np.float32), "latent_shape": list(model.load().model.latent_shape)})
    return Batch(rows=rows)
