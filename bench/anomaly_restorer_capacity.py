"""Does a restorer with a coarser latent or a wider view give back less of a lesion (#19)? Side by
side on the development data of ``bench.anomaly_ablation`` (the seed-0 cohort: 56 train / 16 healthy
reference / 24 held out; the test split is never used).

'Anomaly detection: the volume score' bounds the product's map: restored as their healthy scans
were, lesioned copies reach AUROC 0.993 against 0.948, so the restorer giving back part of each
lesion (38%) is what holds the map back. Fine-tuning its training mix did not change that
('restorers trained on other corruptions', 'a restorer that removes blobs'). This asks whether its
architecture does: the shipped restorer is one level of 16 channels after a stride-2 stem, with a
32^3 x 4 latent (half as many numbers as the 64^3 scan: room to copy a lesion) and a view of about
20 voxels. Each row trains a restorer of one architecture from scratch for the same wall clock on the
training scans, with the restorer's coarse-noise mix (``vae3d.config.COARSE_NOISE``):

- ``32^3 x 4``: the shipped architecture (the control);
- ``16^3 x 8, two levels``: a second level of 32 channels after a downsampling (a quarter of the
  latent's numbers, twice the view, 1.5x the seconds per step);
- ``16^3 x 8, stride-4 stem``: one level of 32 channels after a stride-4 stem (the same latent size,
  0.4x the seconds per step, so 2.4x the steps in the budget).

The shipped restorer, trained for longer on another cohort, is the first row (46 minutes when this
first ran; 104, 159, 214 and then 271 since the four 250-epoch continuations of the stored second,
third, fourth and fifth rows were shipped). Each restorer's
maps: the normalised residual alone (``vae3d.anomaly`` without a head) and the product's (with the
shipped head, which learned from the 46-minute restorer's output, so it favours the shipped rows). The 24
held-out scans are lesioned three times (72 copies). Columns: epochs in the budget, val SSIM, the
share of a lesion the restoration gives back, the healthy held-out scans' mean absolute restoration
error, and for each map voxel AUPRC / best Dice / volume AUROC (24 healthy against 72 lesioned).

    python -m bench.anomaly_restorer_capacity --minutes 12
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.common import (
    dev_restorations,
    restorer_bench_inputs,
    restorer_bench_result,
    restorer_row,
    trained_fields,
    trained_restorer,
    write_result,
)

ROWS = {
    "32^3 x 4 (the shipped architecture)": {"channels": (16,), "patch_size": 2, "latent_channels": 4},
    "16^3 x 8, two levels (16, 32)": {"channels": (16, 32), "patch_size": 2, "latent_channels": 8},
    "16^3 x 8, stride-4 stem (32)": {"channels": (32,), "patch_size": 4, "latent_channels": 8},
}


def _rows(name: str, restorer, d: dict, lesioned, masks, head) -> dict:
    """One restorer's row: both maps from one set of its restorations."""
    restored = dev_restorations(restorer, d, lesioned)
    plain = restorer_row(name, restorer, d, lesioned, masks, None, restored)
    product = restorer_row(name, restorer, d, lesioned, masks, head, restored)
    keys = ("voxel_auprc", "best_dice", "volume_auroc", "flagged", "healthy_flagged")
    return {**{k: v for k, v in plain.items() if k not in keys}, "normalised": {k: plain[k] for k in keys},
            "product": {k: product[k] for k in keys},
            "params": sum(p.numel() for p in restorer.parameters())}


def run(minutes: float, n: int = 96, only: list[str] | None = None) -> dict:
    from vae3d.config import ModelConfig

    d, lesioned, masks, head, shipped = restorer_bench_inputs(n)
    rows = [{**_rows("shipped restorer (another cohort)", shipped, d, lesioned, masks, head),
             "epochs": None}]
    print(rows[-1], flush=True)
    for i, (name, arch) in enumerate(ROWS.items()):
        if only and name not in only:
            continue
        model, result, seconds = trained_restorer(d["train"], d["val"], minutes, Path(f"/tmp/vae3d-capacity/{i}"),
                                                  model=ModelConfig(**arch))
        rows.append({**_rows(name, model, d, lesioned, masks, head), **trained_fields(result, seconds),
                     "architecture": arch})
        print(rows[-1], flush=True)
    return restorer_bench_result(minutes, n, d, lesioned, rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=12.0, help="training budget per architecture, from scratch")
    ap.add_argument("--only", nargs="*", default=None, help="row names to train (default: all)")
    a = ap.parse_args()
    print(write_result("anomaly_restorer_capacity", run(a.minutes, only=a.only)))


if __name__ == "__main__":
    main()
