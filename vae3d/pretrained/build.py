"""Build the shipped pretrained weights (``vae3d/pretrained/vae3d_64cube_3mm.pt`` and ``..._anomaly.pt``).

    python -m vae3d.pretrained.build --which main --epochs 60
    python -m vae3d.pretrained.build --which anomaly --epochs 160
    python -m vae3d.pretrained.build --which anomaly --epochs 150 --from-shipped
    python -m vae3d.pretrained.build --which anomaly --epochs 250 --from-shipped
    python -m vae3d.pretrained.build --which anomaly --epochs 250 --from-shipped   # a second time
    python -m vae3d.pretrained.build --which anomaly --epochs 250 --from-shipped   # a third
    python -m vae3d.pretrained.build --which anomaly --epochs 250 --from-shipped   # a fourth
    python -m vae3d.pretrained.build --which anomaly --epochs 250 --from-shipped   # and a fifth
    python -m vae3d.pretrained.build --which head --steps 3000
    python -m vae3d.pretrained.build --which head --steps 1000 --from-shipped
    python -m vae3d.pretrained.build --which head --steps 4000 --mirror --out FILE   # a candidate, not shipped

Writes a sample cohort of ``--n`` subjects with the seed ``PRETRAIN_SEED`` (one that no
demo or benchmark cohort uses), preprocesses it with the default settings, trains the
default model (``TrainConfig()``) from scratch for a fixed number of epochs (so the same
command gives the same weights on the same machine and torch build), and stores its best
weights as float16 with a description of how they were made. ``--which anomaly`` trains the
anomaly restorer's mix instead (``train.anomaly.restoration``: coarse noise on every input).
``--from-shipped`` starts from the shipped weights of ``--which`` instead of from scratch and
trains ``--epochs`` more on the same cohort (the description records both stages). ``--which head``
trains the anomaly map's discriminative head (``vae3d.anomaly_head``) for ``--steps`` steps on the
shipped restorer's restorations of scans with synthetic anomalies (``HEAD_COPIES`` anomalous copies
of each, and the clean scans), from a cohort of its own (``HEAD_SEED``) that the restorer never saw,
so its residuals are those of new scans. ``--from-shipped`` continues the shipped head at a quarter of
the learning rate (``HEAD_FINETUNE_LR``); ``--mirror`` builds a head that reads the residual mirrored
left to right too (from scratch: it has one more input).

On 2 CPU cores (32^3 x 4 latent, batch 2, + 0.3 (1 - SSIM)): the main model, 60 epochs, 9 minutes,
val SSIM 0.938; the anomaly restorer, 160 epochs from scratch (22 minutes, val SSIM 0.926), then
150 more ``--from-shipped`` (24 minutes, val SSIM 0.940), then 250 more (58 minutes, val SSIM 0.949),
then 250 more again (55 minutes, val SSIM 0.951), a third time (55 minutes, val SSIM 0.952) and a
fourth (57 minutes, val SSIM 0.953) and a fifth (64 minutes, part of them shared with another job; val
SSIM 0.953): the longer it trains, the less of a lesion it gives back (0.44 -> 0.38 -> 0.36 -> 0.35 ->
0.33 -> 0.32 -> 0.315 on the development data)
and the less it errs on healthy scans (BENCHMARKS.md, "Anomaly detection: restorers" and "the
restorer's architecture").
The anomaly head, 3000 steps on 60 scans x 7 (6 anomalous copies and the clean scan): 22 minutes
(part of them shared with another job), final loss 0.59 (BENCHMARKS.md, "Anomaly detection: a
discriminative head"); then 1000 steps ``--from-shipped`` with 30% of the crops on the restorer's
largest errors away from any anomaly (``vae3d.anomaly_head.HARD_SHARE``): 7 minutes (BENCHMARKS.md,
"Anomaly detection: training the head").
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

from vae3d.anomaly_head import FEATURES, HARD_SHARE, LABEL_CHANGE, build_head, fit_head, head_inputs, training_set
from vae3d.checkpoint import save_checkpoint
from vae3d.config import ModelConfig, TrainConfig
from vae3d.inference import reconstruct_all
from vae3d.model import VAE3D, load_model
from vae3d.preprocessing import build_preprocess, preprocess_volume
from vae3d.pretrained import (
    PRETRAIN_SEED,
    PretrainedUnavailable,
    Which,
    describe,
    load_head,
    load_pretrained,
    weights_path,
)
from vae3d.sample_data import CohortSpec, write_cohort
from vae3d.training import build_model, fit

HEAD_COPIES = 6  # anomalous copies of each scan the head trains on
HEAD_SEED = PRETRAIN_SEED + 1  # the head's cohort: scans the restorer never trained on, as at inference
HEAD_LR = 2e-3  # the head's peak learning rate (one cycle) from scratch
HEAD_FINETUNE_LR = 5e-4  # and continuing the shipped head
CONTINUED = ("train", "copies", "built_in_s", "continued_from")  # what a continued build records of the stage before


def _cohort(n: int, tmp: Path, seed: int = PRETRAIN_SEED) -> torch.Tensor:
    """A sample cohort (the pretraining seed by default), preprocessed with the default settings."""
    paths = write_cohort(Path(tmp) / "cohort", CohortSpec(n=n, seed=seed, spacing_mm=2.0))
    chain = build_preprocess()
    return torch.from_numpy(np.stack([preprocess_volume(chain, p)[0] for p in paths]))


def build_anomaly_head(n: int, steps: int, out: Path | None = None, progress: bool = True, seed: int = 0,
                       from_shipped: bool = False, mirror: bool | None = None) -> dict:
    """Train and store the anomaly head on the shipped restorer's restorations (see the module's text);
    ``from_shipped``: continue the shipped head instead of starting from scratch; ``mirror``: a head that
    reads the mirrored residual too (``vae3d.anomaly_head.build_head``; None: as the shipped head does, if
    there is one)."""
    shipped = load_head() if from_shipped else None
    if mirror is None:
        try:
            mirror = bool((shipped or load_head()).mirror)
        except PretrainedUnavailable:  # no shipped head: one is being built from scratch
            mirror = False
    if from_shipped and shipped.mirror != mirror:
        reads = "reads" if shipped.mirror else "does not read"
        raise ValueError(f"the shipped head {reads} the mirrored residual: a head that differs in its inputs cannot "
                         "continue it; build it from scratch (no --from-shipped)")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vae3d-pretrain-") as tmp:
        vols = _cohort(n, Path(tmp), HEAD_SEED)
    restorer = load_pretrained(VAE3D(input_size=vols.shape[-1], **ModelConfig().model_dump()), "anomaly").eval()
    images, labels = training_set(vols, HEAD_COPIES, seed)
    torch.manual_seed(seed)
    head = shipped.train() if from_shipped else build_head(FEATURES, mirror=mirror)
    lr = HEAD_FINETUNE_LR if from_shipped else HEAD_LR
    report = (lambda s, v: sys.stderr.write(f"head step {s}/{steps}: loss {v:.3f}\n")) if progress else None
    losses = fit_head(head, head_inputs(images, reconstruct_all(restorer, images), mirror=mirror), labels, steps, seed,
                      lr=lr, progress=report)
    info = {"which": "head", "features": list(head.features), "mirror": mirror,
            "restorer": describe("anomaly").get("val_metrics"),
            "cohort": {"n": n, "seed": HEAD_SEED, "spacing_mm": 2.0}, "copies": HEAD_COPIES,
            "train": {"steps": steps, "seed": seed, "lr": lr, "label_change": LABEL_CHANGE, "hard_share": HARD_SHARE,
                      "final_loss": float(np.mean(losses[-100:]))},
            "torch": torch.__version__, "built_in_s": round(time.perf_counter() - t0)}
    if from_shipped:  # the stage it continued
        info["continued_from"] = {k: v for k, v in head.description.items() if k in CONTINUED}
    save_checkpoint(out or weights_path("head"),
                    {"model": {k: v.half() for k, v in head.state_dict().items()}, "info": json.dumps(info)})
    return info


def build(n: int, epochs: int, out: Path | None = None, n_val: int = 6, progress: bool = True,
          which: Which = "main", from_shipped: bool = False) -> dict:
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vae3d-pretrain-") as tmp:
        vols = _cohort(n, Path(tmp))
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
        info["continued_from"] = {k: before[k] for k in (*CONTINUED, "val_metrics") if k in before}
    save_checkpoint(out or weights_path(which),
                    {"model": {k: v.half() for k, v in best.state_dict().items()}, "info": json.dumps(info)})
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=60, help="subjects in the pretraining cohort")
    ap.add_argument("--which", choices=("main", "anomaly", "head"), default="main",
                    help="the main model (train.restoration), the anomaly restorer (train.anomaly.restoration) or "
                    "the anomaly map's discriminative head")
    ap.add_argument("--epochs", type=int, default=None, help="training epochs (fixed, for reproducibility; "
                    "default: 60 for the main model, 160 for the anomaly restorer)")
    ap.add_argument("--out", type=Path, default=None, help="default: the shipped file of --which")
    ap.add_argument("--from-shipped", action="store_true",
                    help="start from the shipped weights of --which and train --epochs more (default: from scratch)")
    ap.add_argument("--steps", type=int, default=3000, help="--which head: training steps (batch 8 of 32^3 crops)")
    ap.add_argument("--mirror", action=argparse.BooleanOptionalAction, default=None,
                    help="--which head: whether the head reads the residual mirrored left to right too "
                    "(default: as the shipped head)")
    a = ap.parse_args()
    epochs = a.epochs or (160 if a.which == "anomaly" else 60)
    info = (build_anomaly_head(a.n, a.steps, a.out, from_shipped=a.from_shipped, mirror=a.mirror)
            if a.which == "head" else build(a.n, epochs, a.out, which=a.which, from_shipped=a.from_shipped))
    sys.stdout.write(json.dumps(info, indent=1) + "\n")


if __name__ == "__main__":
    main()
