"""The scan's own drift in the anomaly map (#19), side by side on the development data of
``bench.anomaly_ablation`` (the seed-0 cohort: 56 train / 16 healthy reference / 24 held out,
lesioned copies of the held-out scans; the test split is never used).

The healthy held-out scans' hottest head voxels are broad, faint patches where the scan is darker
(or brighter) than its restoration by 0.1-0.15 over a region (the cerebellum, a stretch of white
matter): the scan's bias field, which the restorer evens out. To the head they look like the faint
hypo-intense lesions it misses. Every row makes the product's map (``vae3d.anomaly``: the shipped
restorer and head, calibrated leave-one-out on the reference scans, the envelope subtracted) with
the residual's low-pass over the head at ``sigma`` voxels put back into the restoration first
(``vae3d.anomaly.with_drift``; none: the map before). The last row fine-tunes the shipped head for
``--steps`` steps on the head's own cohort with the drift put back into its training restorations
too (``--steps 0`` leaves it out), and scores it at the adopted sigma.

Columns: the normalised residual alone and the map with the head (voxel AUPRC / best Dice / volume
AUROC at the stored top fraction), the share of lesioned and of healthy held-out scans flagged at
the calibrated threshold.

    python -m bench.anomaly_drift
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from bench.anomaly_levers import _row
from bench.common import anomaly_dev_data, anomaly_restorer, write_result

SIGMAS = (None, 3.0, 5.0, 8.0, 12.0, 16.0)


def run(steps: int, n: int = 96) -> dict:
    from vae3d import anomaly
    from vae3d.anomaly_head import fit_head, head_inputs, training_set
    from vae3d.inference import reconstruct_all
    from vae3d.pretrained import load_head
    from vae3d.pretrained.build import HEAD_COPIES, HEAD_FINETUNE_LR, HEAD_SEED, _cohort

    d = anomaly_dev_data(n)
    sets = {k: d[k] for k in ("val", "held", "lesioned")}
    restorer = anomaly_restorer(d["val"].shape[-1])
    rec = {k: reconstruct_all(restorer, x) for k, x in sets.items()}
    head, rows = load_head(), []
    for sigma in SIGMAS:
        t = time.perf_counter()
        name = "none (before)" if sigma is None else f"sigma {sigma:g}" + (
            " (adopted)" if sigma == anomaly.DRIFT_SIGMA else "")
        row = _row(name, sets, rec, d["masks"], head, anomaly.HEAD_TEMPERATURE, anomaly.HEAD_SIGMA, drift_sigma=sigma)
        row.pop("maps")
        rows.append({**row, "drift_sigma": sigma, "seconds": time.perf_counter() - t})
        print(rows[-1], flush=True)
    if steps:
        t = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="vae3d-bench-") as tmp:
            vols = _cohort(60, Path(tmp), HEAD_SEED)
        images, labels = training_set(vols, HEAD_COPIES, 0)
        tuned = load_head().train()
        inputs = head_inputs(images, anomaly.with_drift(images, reconstruct_all(restorer, images)), mirror=tuned.mirror)
        torch.manual_seed(1)
        fit_head(tuned, inputs, labels, steps, seed=1, lr=HEAD_FINETUNE_LR)
        row = _row(f"head fine-tuned on drift-free restorations, sigma {anomaly.DRIFT_SIGMA:g}", sets, rec,
                   d["masks"], tuned.eval(), anomaly.HEAD_TEMPERATURE, anomaly.HEAD_SIGMA)
        row.pop("maps")
        rows.append({**row, "drift_sigma": anomaly.DRIFT_SIGMA, "seconds": time.perf_counter() - t})
        print(rows[-1], flush=True)
    return {"n": n, "split": [len(d["train"]), len(d["val"]), len(d["held"])], "steps": steps,
            "lesions": d["lesions"], "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1000,
                    help="fine-tuning steps of the last row's head (batch 8 of 32^3 crops); 0 leaves the row out")
    a = ap.parse_args()
    print(write_result("anomaly_drift", run(a.steps)))


if __name__ == "__main__":
    main()
