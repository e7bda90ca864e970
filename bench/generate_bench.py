"""Generation throughput and memory: end to end vs the model alone (prior sampling and decode).

A 64^3 model, trained for a few seconds on the sample volumes (so its outputs compress like
brain images, not like noise), is registered in a scratch workspace with the latent prior the
train flow fits by default (rank 32, each sample refined 3 times); then ``vae3d generate
synthetic`` runs through Prefect end to end (prior sampling, decode, refinement, NIfTI write,
sidecars, run manifest) with the default output settings and with the other storage options.
The ratio to the model alone on the same number of volumes (prior sampling, decode and
refinement, nothing else; measured before and after, in the same process, both in a plain
loop and on the flow's model lanes; the faster is the baseline) is the overhead: the median
of ``--repeats`` runs, each between two model-alone measurements, since a shared VM's speed
drifts by 10% from minute to minute. Peak memory is measured in separate processes at two N
(the median of ``--mem-repeats`` processes each).

    python -m bench.generate_bench --n 120 --mem-n 10 500 --repeats 2 --mem-repeats 1
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.common import write_result
from flows import resources

SIZE = 64
# the default first (the headline figure), then the other storage options side by side
STORAGE = [{"dtype": "int16", "compression": 0}, {"dtype": "int16", "compression": 1},
           {"dtype": "float32", "compression": 0}]


def _setup(root: Path, size: int = SIZE) -> None:
    """Register a briefly trained ``size``^3 model as champion in a workspace at ``root``, with the
    latent prior the train flow fits by default (``train.prior``) on its training volumes."""
    from bench.common import preprocessed_tensors
    from flows.registry import log_and_register, promote_if_better
    from flows.settings import load_settings
    from flows.tracking import init_store
    from flows.workspace import Workspace
    from vae3d import inference
    from vae3d.checkpoint import save_checkpoint
    from vae3d.generation import calibrate_intensity
    from vae3d.preprocessing import template_affine
    from vae3d.prior import fit_prior

    settings = load_settings(workspace=root)
    ws = Workspace.at(root)
    client, exp = init_store(ws, settings.mlflow)
    model = _trained(size)
    ckpt = save_checkpoint(root / "best.pt", {"model": model.state_dict(), "hparams": model.hparams()})
    cfg, train = settings.train.prior, preprocessed_tensors(48, size)
    prior = fit_prior(cfg.kind, inference.encode_all(model, train), cfg.rank, cfg.refine)
    if cfg.match_intensity:
        prior = calibrate_intensity(model, prior, train)
    prior_path = save_checkpoint(root / "prior.pt", prior.state())
    run = client.create_run(exp)
    meta = {"template_affine": template_affine((size,) * 3, (192.0 / size,) * 3).tolist(),
            "preprocess": settings.preprocess.model_dump(mode="json"), "run_id": run.info.run_id,
            "prior": {"kind": prior.kind, "rank": getattr(prior, "rank", None), "refine": prior.refine}}
    v = log_and_register(client, run.info.run_id, "vae3d", ckpt, meta, {"val_ssim": "0.5"}, size,
                         extra={"prior": prior_path})
    promote_if_better(client, "vae3d", v, "val_ssim")


def _trained(size: int = SIZE, steps: int = 120) -> torch.nn.Module:
    from bench.common import preprocessed_tensors
    from vae3d.losses import VAELoss
    from vae3d.model import VAE3D

    torch.manual_seed(0)
    model = VAE3D(input_size=size)
    data = preprocessed_tensors(48, size)
    opt, loss_fn = torch.optim.AdamW(model.parameters(), lr=2e-3), VAELoss("l1")
    for _ in range(steps):
        x = data[torch.randint(len(data), (4,))]
        r, mu, lv = model(x)
        opt.zero_grad()
        loss_fn(r, x, mu, lv, 0.05)["loss"].backward()
        opt.step()
    return model.eval()


def _generate(root: Path, n: int, out: Path, **storage) -> float:
    from data_contracts.generation import GenerationRequest
    from flows.generate import run_generate
    from flows.settings import load_settings
    from flows.workspace import local_prefect_mode

    settings = load_settings(workspace=root)
    t = time.perf_counter()
    with local_prefect_mode():  # as the `vae3d` command runs flows
        run_generate(GenerationRequest(mode="synthetic", n=n, seed=0, batch_size=4, **storage), settings, str(out))
    return time.perf_counter() - t


def _decoder_only(root: Path, n: int, lanes: bool) -> float:
    """Seconds to sample the registered prior and decode (and refine) ``n`` volumes in batches of 4
    on the flow's device, nothing else: in a plain loop on the calling thread (torch's default
    threads), or on the flow's model lanes."""
    from vae3d.checkpoint import load_checkpoint
    from vae3d.generation import synthesize
    from vae3d.model import load_model
    from vae3d.prior import prior_from_state

    model = load_model(root / "best.pt").to(_device())
    prior = prior_from_state(load_checkpoint(root / "prior.pt"))
    groups = [list(range(s, min(n, s + 4))) for s in range(0, n, 4)]
    decode = functools.partial(synthesize, model, seed=0, prior=prior)
    if lanes:
        for _ in resources.model_map(decode, groups[:4]):
            pass
        t = time.perf_counter()
        for _ in resources.model_map(decode, groups):
            pass
        return time.perf_counter() - t
    decode([0, 1, 2, 3])
    t = time.perf_counter()
    for group in groups:
        decode(group)
    return time.perf_counter() - t


def _write_path(root: Path, n: int, writers: int) -> float:
    """Seconds to write ``n`` decoded volumes with their checksums and sidecars on
    ``writers`` writer threads, with no model running: the most a decoder can be fed
    through one process's writers (a GPU decoding faster than this is write-bound)."""
    from data_contracts.generation import GenerationRequest, ModelRef
    from flows.registry import code_version
    from vae3d.generation import quantize, synthesize
    from vae3d.model import load_model
    from vae3d.outputs import provenance, write_volume
    from vae3d.preprocessing import template_affine

    model = load_model(root / "best.pt")
    batches = [quantize(synthesize(model, range(i, i + 4), seed=0)) for i in range(0, 16, 4)]
    req = GenerationRequest(mode="synthetic", n=n, seed=0, batch_size=4)
    ref = ModelRef(uri="models:/vae3d@champion", name="vae3d", version="1", weights_sha256="0" * 64)
    affine, out = template_affine((SIZE,) * 3, (192.0 / SIZE,) * 3), root / "writes"

    def write(start: int, vols: torch.Tensor) -> None:
        for i, v in enumerate(vols, start):
            write_volume(out / f"w_{i:06d}.nii.gz", v[0].numpy(), affine,
                         provenance(req, ref, i, code_version()), dtype="int16")

    write(0, batches[0])  # the folder, the header cache
    t = time.perf_counter()
    futures = [resources.submit_write(write, s, batches[(s // 4) % 4], writers=writers) for s in range(0, n, 4)]
    for f in futures:
        f.result()
    seconds = time.perf_counter() - t
    shutil.rmtree(out)
    return seconds


def _prior_label() -> str:
    from flows.settings import load_settings

    cfg = load_settings().train.prior
    return (f"{cfg.kind}, rank {cfg.rank}, temperature {cfg.spread:g}, refined x{cfg.refine}"
            + (", intensity map" if cfg.match_intensity else ""))


def _device() -> torch.device:
    from flows.settings import load_settings
    from vae3d.device import resolve_device

    return resolve_device(load_settings().generate.device)


def _decoders(root: Path, n: int) -> dict[str, float]:
    return {"plain": _decoder_only(root, n, lanes=False), "lanes": _decoder_only(root, n, lanes=True)}


def _child(root: str, n: int) -> None:
    from bench.common import peak_rss_mb

    out = Path(root) / f"memory-{n}"  # inside the workspace: the pipeline writes nowhere else
    seconds = _generate(Path(root), n, out)
    shutil.rmtree(out)
    print(json.dumps({"n": n, "seconds": seconds,
                      "peak_rss_mb": peak_rss_mb()}))


def _flow_row(root: Path, n: int, storage: dict) -> dict:
    out = root / "out"
    t = _generate(root, n, out, **storage)
    size = sum(p.stat().st_size for p in out.glob("*.nii.gz"))
    shutil.rmtree(out)
    return {**storage, "flow_s": t, "mb_per_volume": size / n / 2**20}


def _memory(root: Path, n: int, env: dict) -> dict:
    p = subprocess.run([sys.executable, "-m", "bench.generate_bench", "--child", str(root), str(n)],
                       capture_output=True, text=True, env=env, check=True)
    return json.loads(p.stdout.strip().splitlines()[-1])


def _median(rows: list[dict], key: str) -> dict:
    """The row with the median ``key`` (the lower middle one of an even count)."""
    return sorted(rows, key=lambda r: r[key])[(len(rows) - 1) // 2]


def run(n: int, mem_ns: list[int], repeats: int = 3, mem_repeats: int | None = None) -> dict:
    """The default storage is timed ``repeats`` times, each between two decoder-only
    measurements (its baseline is their mean, the faster way); the overhead reported is the
    median of the repeats, with their range. Peak memory is the median of ``repeats``
    processes per N."""
    root = Path(tempfile.mkdtemp(prefix="vae3d-genbench-"))
    env = {**os.environ, "PREFECT_HOME": str(root / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "MLFLOW_DISABLE_TELEMETRY": "true",
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": os.environ.get(
               "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")}  # 20 s by default: too short under load
    os.environ.update(env)
    _setup(root)
    _generate(root, 4, root / "warm")  # start Prefect's server and load the model once
    # the fixed cost of one flow run (creation, model lookup, manifest, Prefect's teardown)
    t_fixed = min(_generate(root, 4, root / f"small{i}") for i in range(3)) - _decoder_only(root, 4, lanes=True)
    decs, repeats_rows = [_decoders(root, n)], []
    for _ in range(repeats):
        repeats_rows.append(_flow_row(root, n, STORAGE[0]))
        decs.append(_decoders(root, n))
    for row, (a, b) in zip(repeats_rows, itertools.pairwise(decs), strict=True):
        row["decoder_s"] = min((a[k] + b[k]) / 2 for k in a)  # the faster decoder: the stricter ratio
        row["overhead_fraction"] = row["flow_s"] / row["decoder_s"] - 1.0
    flows = [dict(_median(repeats_rows, "overhead_fraction"))]
    flows += [_flow_row(root, n, storage) for storage in STORAGE[1:]]
    decs.append(_decoders(root, n))
    decoders = {k: statistics.mean(d[k] for d in decs) for k in decs[0]}
    for row in flows[1:]:
        row["decoder_s"] = min(decoders.values())
        row["overhead_fraction"] = row["flow_s"] / row["decoder_s"] - 1.0
    for row in flows:
        row["volumes_per_s"] = n / row["flow_s"]
        row["per_volume_overhead_fraction"] = (row["flow_s"] - t_fixed) / row["decoder_s"] - 1.0
    # write path alone, one writer and one per core (the GPU default on a machine of this size)
    writes = {w: n / statistics.median(_write_path(root, n, w) for _ in range(repeats))
              for w in sorted({1, resources.cpu_cores()})}
    runs = [[_memory(root, m, env) for _ in range(mem_repeats or repeats)] for m in mem_ns]
    memory = [{**_median(rs, "peak_rss_mb"), "peak_rss_mb_runs": [r["peak_rss_mb"] for r in rs]} for rs in runs]
    shutil.rmtree(root, ignore_errors=True)
    default = flows[0]
    return {
        "n": n, "size": SIZE, "repeats": repeats, "prior": _prior_label(), "flow_s": default["flow_s"],
        "decoder_only_s": default["decoder_s"],
        "flow_volumes_per_s": n / default["flow_s"], "decoder_volumes_per_s": n / default["decoder_s"],
        "decoder_plain_volumes_per_s": n / decoders["plain"], "decoder_lanes_volumes_per_s": n / decoders["lanes"],
        "model_lanes": resources.resolve_lanes(), "torch_threads": torch.get_num_threads(), "device": str(_device()),
        "writers": resources.resolve_writers(0, _device()), "write_path_volumes_per_s": writes,
        "overhead_fraction": default["overhead_fraction"], "fixed_s": t_fixed,
        "overhead_fraction_runs": [r["overhead_fraction"] for r in repeats_rows],
        "per_volume_overhead_fraction": default["per_volume_overhead_fraction"], "storage": flows, "memory": memory,
        "memory_ratio_largest_to_smallest": memory[-1]["peak_rss_mb"] / memory[0]["peak_rss_mb"] if memory else None,
        "targets": {"overhead_fraction_max": 0.15, "memory_ratio_max": 1.10},
    }


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        _child(sys.argv[2], int(sys.argv[3]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--mem-n", type=int, nargs="+", default=[10, 500])
    ap.add_argument("--repeats", type=int, default=3, help="timed flows of the default storage, and processes per N")
    ap.add_argument("--mem-repeats", type=int, default=None, help="processes per N (default: --repeats)")
    a = ap.parse_args()
    result = run(a.n, a.mem_n, a.repeats, a.mem_repeats)
    print(json.dumps(result, indent=1))
    print(write_result("generate", result))


if __name__ == "__main__":
    main()
