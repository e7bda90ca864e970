"""Generation throughput and memory: end to end vs the decoder's forward pass alone.

A 64^3 model (random weights: speed does not depend on them) is registered in a scratch
workspace, then ``vae3d generate synthetic`` runs through Prefect end to end (sampling,
decode, NIfTI write, sidecars, run manifest). The ratio to decoding the same number of
volumes in a plain loop is the overhead. Peak memory is measured in separate processes at
two sizes of N.

    python -m bench.generate_bench --n 200 --mem-n 10 500
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.common import write_result

SIZE = 64


def _setup(root: Path, size: int = SIZE) -> None:
    """Register an untrained ``size``^3 model as champion in a workspace at ``root``."""
    from flows.registry import log_and_register, promote_if_better
    from flows.settings import load_settings
    from flows.tracking import init_store
    from flows.workspace import Workspace
    from vae3d.model import VAE3D
    from vae3d.preprocessing import template_affine
    from vae3d.training import save_checkpoint

    settings = load_settings(workspace=root)
    ws = Workspace.at(root)
    client, exp = init_store(ws, settings.mlflow)
    torch.manual_seed(0)
    model = VAE3D(input_size=size)
    ckpt = save_checkpoint(root / "best.pt", {"model": model.state_dict(), "hparams": model.hparams()})
    run = client.create_run(exp)
    meta = {"template_affine": template_affine((size,) * 3, (192.0 / size,) * 3).tolist(),
            "preprocess": settings.preprocess.model_dump(mode="json"), "run_id": run.info.run_id}
    v = log_and_register(client, run.info.run_id, "vae3d", ckpt, meta, {"val_ssim": "0.5"}, size)
    promote_if_better(client, "vae3d", v, "val_ssim")


def _generate(root: Path, n: int, out: Path) -> float:
    from data_contracts.generation import GenerationRequest
    from flows.generate import run_generate
    from flows.settings import load_settings

    settings = load_settings(workspace=root)
    t = time.perf_counter()
    run_generate(GenerationRequest(mode="synthetic", n=n, seed=0, batch_size=4), settings, str(out))
    return time.perf_counter() - t


def _decoder_only(n: int) -> float:
    from vae3d.generation import synthesize
    from vae3d.model import VAE3D

    torch.manual_seed(0)
    model = VAE3D(input_size=SIZE).eval()
    synthesize(model, [0, 1, 2, 3], 0)
    t = time.perf_counter()
    for start in range(0, n, 4):
        synthesize(model, list(range(start, min(n, start + 4))), 0)
    return time.perf_counter() - t


def _child(root: str, n: int) -> None:
    from bench.common import peak_rss_mb

    out = Path(tempfile.mkdtemp())
    seconds = _generate(Path(root), n, out)
    shutil.rmtree(out)
    print(json.dumps({"n": n, "seconds": seconds,
                      "peak_rss_mb": peak_rss_mb()}))


def run(n: int, mem_ns: list[int]) -> dict:
    root = Path(tempfile.mkdtemp(prefix="vae3d-genbench-"))
    env = {**os.environ, "PREFECT_HOME": str(root / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "MLFLOW_DISABLE_TELEMETRY": "true"}
    os.environ.update(env)
    _setup(root)
    _generate(root, 4, root / "warm")  # start Prefect's server and load the model once
    t_flow = _generate(root, n, root / "out")
    t_dec = _decoder_only(n)
    memory = []
    for m in mem_ns:
        p = subprocess.run([sys.executable, "-m", "bench.generate_bench", "--child", str(root), str(m)],
                           capture_output=True, text=True, env=env, check=True)
        memory.append(json.loads(p.stdout.strip().splitlines()[-1]))
    shutil.rmtree(root, ignore_errors=True)
    return {
        "n": n, "size": SIZE, "flow_s": t_flow, "decoder_only_s": t_dec,
        "flow_volumes_per_s": n / t_flow, "decoder_volumes_per_s": n / t_dec,
        "overhead_fraction": t_flow / t_dec - 1.0, "memory": memory,
        "memory_ratio_largest_to_smallest": memory[-1]["peak_rss_mb"] / memory[0]["peak_rss_mb"] if memory else None,
        "targets": {"overhead_fraction_max": 0.15, "memory_ratio_max": 1.10},
    }


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        _child(sys.argv[2], int(sys.argv[3]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--mem-n", type=int, nargs="+", default=[10, 500])
    a = ap.parse_args()
    result = run(a.n, a.mem_n)
    print(json.dumps(result, indent=1))
    print(write_result("generate", result))


if __name__ == "__main__":
    main()
