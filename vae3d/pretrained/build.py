"""Build the shipped pretrained weights (``vae3d/pretrained/vae3d_64cube_3mm.pt`` and ``..._anomaly.pt``).

    python -m vae3d.pretrained.build --which main --epochs 60
    python -m vae3d.pretrained.build --which anomaly --epochs 160
    python -m vae3d.pretrained.build --which anomaly --epochs 150 --from-shipped

Writes a sample cohort of ``--n`` subjects with the seed ``PRETRAIN_SEED`` (one that no
demo or benchmark cohort uses), preprocesses it with the default settings, trains the
default model (``TrainConfig()``) from scratch for a fixed number of epochs (so the same
command gives the same weights on the same machine and torch build), and stores its best
weights as float16 with a description of how they were made. ``--which anomaly`` trains the
anomaly restorer's mix instead (``train.anomaly.restoration``: coarse noise on every input).
``--from-shipped`` starts from the shipped weights of ``--which`` instead of from scratch and
trains ``--epochs`` more on the same cohort (the description records both stages).

On 2 CPU cores (32^3 x 4 latent, batch 2, + 0.3 (1 - SSIM)): the main model, 60 epochs, 9 minutes,
val SSIM 0.938; the anomaly restorer, 160 epochs from scratch (22 minutes, val SSIM 0.926), then
150 more ``--from-shipped`` (24 minutes, val SSIM 0.940): the longer it trains, the less of a lesion
it gives back (0.44 -> 0.38 on the development data; BENCHMARKS.md, "Anomaly detection: restorers").
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vae3d.checkpoint import save_checkpoint
from vae3d.config import TrainConfig
from vae3d.model import load_model
from vae3d.preprocessing import build_preprocess, preprocess_volume
from vae3d.pretrained import PRETRAIN_SEED, Which, describe, load_pretrained, weights_path
from vae3d.sample_data import CohortSpec, write_cohort
from vae3d.training import build_model, fit


def build(n: int, epochs: int, out: Path | None = None, n_val: int = 6, progress: bool = True,
          which: Which = "main", from_shipped: bool = False) -> dict:
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vae3d-pretrain-") as tmp:
        paths = write_cohort(Path(tmp) / "cohort", CohortSpec(n=n, seed=PRETRAIN_SEED, spacing_mm=2.0))
        chain = build_preprocess()
        vols = torch.from_numpy(np.stack([preprocess_volume(chain, p)[0] for p in paths]))
        cfg = TrainConfig(epochs=epochs, patience=10_000)
        if which == "anomaly":
            cfg = cfg.model_copy(update={"restoration": cfg.anomaly.restoration})
        model = build_model(cfg, vols.shape[-1])
        before = None
        if from_shipped:
            before = describe(which)
            load_pretrained(model, which)
        result = fit(model, vols[n_val:], vols[:n_val], cfg, Path(tmp) / "ckpt", progress=progress)
        best = load_model(result.best_checkpoint)
    info = {"which": which, "hparams": best.hparams(),
            "cohort": {"n": n, "seed": PRETRAIN_SEED, "spacing_mm": 2.0, "val": n_val},
            "train": {"epochs": epochs, "best_epoch": result.best_epoch, "config": cfg.to_dict()},
            "val_metrics": {k: v for k, v in result.best_metrics.items() if k.startswith("val_")},
            "torch": torch.__version__, "built_in_s": round(time.perf_counter() - t0)}
    if before is not None:  # the stage it continued
        info["continued_from"] = {k: before[k] for k in ("train", "val_metrics", "built_in_s", "continued_from")
                                  if k in before}
    save_checkpoint(out or weights_path(which),
                    {"model": {k: v.half() for k, v in best.state_dict().items()}, "info": json.dumps(info)})
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=60, help="subjects in the pretraining cohort")
    ap.add_argument("--which", choices=("main", "anomaly"), default="main",
                    help="the main model (train.restoration) or the anomaly restorer (train.anomaly.restoration)")
    ap.add_argument("--epochs", type=int, default=None, help="training epochs (fixed, for reproducibility; "
                    "default: 60 for the main model, 160 for the anomaly restorer)")
    ap.add_argument("--out", type=Path, default=None, help="default: the shipped file of --which")
    ap.add_argument("--from-shipped", action="store_true",
                    help="start from the shipped weights of --which and train --epochs more (default: from scratch)")
    a = ap.parse_args()
    epochs = a.epochs or (160 if a.which == "anomaly" else 60)
    info = build(a.n, epochs, a.out, which=a.which, from_shipped=a.from_shipped)
    sys.stdout.write(json.dumps(info, indent=1) + "\n")


if __name__ == "__main__":
    main()
