"""Denoising output: the model alone, or fused with its input (whole volume, or inside the head).

The shipped pretrained model (``vae3d.pretrained``) on a fresh sample cohort (seed 777, used
by no other benchmark or by pretraining): 4 volumes measure the model's validation RMSE, 6
are denoised at each Rician noise level and scored against their clean versions.

    python -m bench.denoise_fusion
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from bench.common import write_result

LEVELS = (0.0, 0.03, 0.05, 0.10)


def run(n_val: int = 4, n_test: int = 6, seed: int = 777) -> dict:
    from vae3d import inference
    from vae3d.config import TrainConfig
    from vae3d.evaluation import denoising
    from vae3d.preprocessing import build_preprocess, preprocess_volume
    from vae3d.sample_data import CohortSpec, write_cohort
    from vae3d.training import build_model

    with tempfile.TemporaryDirectory() as tmp:
        paths = write_cohort(Path(tmp), CohortSpec(n=n_val + n_test, seed=seed, spacing_mm=2.0))
        chain = build_preprocess()
        vols = torch.from_numpy(np.stack([preprocess_volume(chain, p)[0] for p in paths]))
    val, test = vols[:n_val], vols[n_val:]
    model = build_model(TrainConfig(init="pretrained"), 64).eval()
    rmse = inference.restoration_error(model, val)
    rows = []
    for sigma in LEVELS:
        noisy = denoising.add_rician(test, sigma, seed=5) if sigma else test
        alone = torch.cat([inference.reconstruct(model, c) for c in noisy.split(3)])
        outs = {"noisy input": noisy, "model alone": alone,
                "fused, whole volume": inference.fuse_whole_volume(noisy, alone, rmse),
                "fused inside the head (default)": inference.fuse(noisy, alone, rmse)}
        rows.append({"noise": sigma, **{k: denoising.scores(v, test) for k, v in outs.items()}})
        print(json.dumps(rows[-1]), flush=True)
    return {"model": "vae3d.pretrained", "cohort_seed": seed, "n_val": n_val, "n_test": n_test,
            "model_rmse": rmse, "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.parse_args()
    print(write_result("denoise_fusion", run()))


if __name__ == "__main__":
    main()
