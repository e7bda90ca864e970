"""Scaling: ingest and generate time at N = 10, 100, 1000 small volumes (near-linear expected).

Ingest validates N phantom volumes (32^3, ~40 KB each) through the Prefect flow into a fresh
workspace; generate writes N synthetic 32^3 volumes from a registered model. One Prefect
server serves every run, so its start-up is outside the timings.

    python -m bench.scaling --ns 10 100 1000
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from bench.common import write_result


def run(ns: list[int]) -> dict:
    root = Path(tempfile.mkdtemp(prefix="vae3d-scaling-"))
    os.environ.update(PREFECT_HOME=str(root / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
                      MLFLOW_DISABLE_TELEMETRY="true")
    from bench.generate_bench import _setup
    from data_contracts.generation import GenerationRequest
    from flows.generate import run_generate
    from flows.ingest import run_ingest
    from flows.settings import load_settings
    from vae3d import nifti
    from vae3d.sample_data import phantom

    src = root / "src"
    for i in range(max(ns)):
        image, affine, _ = phantom((32, 32, 32), spacing=6.0, seed=i)
        nifti.save_volume(src / f"sub-{i:05d}.nii.gz", image, affine)
    _setup(root / "model", size=32)
    model_settings = load_settings(workspace=root / "model", allowed_roots=[root])
    run_generate(GenerationRequest(mode="synthetic", n=2, seed=0), model_settings, str(root / "warm"))
    rows = []
    for n in ns:
        subset = root / f"src{n}"
        subset.mkdir()
        for p in sorted(src.iterdir())[:n]:
            os.link(p, subset / p.name)
        t = time.perf_counter()
        manifest, _ = run_ingest([str(subset)], load_settings(workspace=root / f"ws{n}", allowed_roots=[root]))
        t_ingest = time.perf_counter() - t
        assert len(manifest.rows) == n
        t = time.perf_counter()
        out = run_generate(GenerationRequest(mode="synthetic", n=n, seed=1, batch_size=8), model_settings,
                           str(root / f"gen{n}"))
        t_gen = time.perf_counter() - t
        assert len(out.outputs) == n
        rows.append({"n": n, "ingest_s": t_ingest, "generate_s": t_gen})
    shutil.rmtree(root, ignore_errors=True)
    base = rows[0]
    for r in rows:
        r["ingest_per_volume_vs_smallest"] = (r["ingest_s"] / r["n"]) / (base["ingest_s"] / base["n"])
        r["generate_per_volume_vs_smallest"] = (r["generate_s"] / r["n"]) / (base["generate_s"] / base["n"])
    return {"rows": rows, "volume": "32^3 float32 phantom"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ns", type=int, nargs="+", default=[10, 100, 1000])
    print(write_result("scaling", run(ap.parse_args().ns)))


if __name__ == "__main__":
    main()
