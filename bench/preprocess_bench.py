"""Preprocessing throughput on real-sized 1 mm volumes: cold and warm cache vs nibabel's load.

The floor is what nibabel alone needs to load the same files (``nib.load(p).get_fdata()``).
Cold = the whole chain (our bounded ISA-L reader + MONAI transforms) with an empty cache;
warm = the same files again, served from the verified cache.

    python -m bench.preprocess_bench --n 6
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from bench.common import RESULTS, sample_cohort, write_result
from data_contracts import ManifestRow
from vae3d.preprocessing import PreprocessCache, build_preprocess
from vae3d.preprocessing.stage import preprocess_row
from vae3d.validate import inspect_volume


def _time(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def run(n: int) -> dict:
    paths = sample_cohort(RESULTS / "cohort_1mm", n, 1.0)
    rows = [ManifestRow(id=h.sha256[:16], split="train", header=h) for h in map(inspect_volume, paths)]
    chain = build_preprocess()
    floor = _time(lambda: [nib.load(p).get_fdata(dtype=np.float32) for p in paths])
    cache_dir = Path(tempfile.mkdtemp())

    def cold():
        shutil.rmtree(cache_dir, ignore_errors=True)
        cache = PreprocessCache(cache_dir)
        hits = [preprocess_row(r, chain, cache)[1] for r in rows]
        assert not any(hits)

    def warm():
        cache = PreprocessCache(cache_dir)
        hits = [preprocess_row(r, chain, cache)[1] for r in rows]
        assert all(hits)

    t_cold = _time(cold)
    t_warm = _time(warm)
    shutil.rmtree(cache_dir, ignore_errors=True)
    shape = rows[0].header.shape
    return {
        "n": n, "input_shape": list(shape), "input_spacing_mm": 1.0,
        "nibabel_load_s_per_vol": floor / n, "cold_s_per_vol": t_cold / n, "warm_s_per_vol": t_warm / n,
        "cold_over_floor": t_cold / floor, "cold_over_warm": t_cold / t_warm,
        "targets": {"cold_over_floor_max": 2.0, "cold_over_warm_min": 20.0},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=6)
    result = run(ap.parse_args().n)
    print(result)
    print(write_result("preprocess", result))


if __name__ == "__main__":
    main()
