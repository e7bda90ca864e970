"""Test-time averaging of the anomaly restorer's restoration (#19), side by side on the development
data of ``bench.anomaly_ablation`` (the seed-0 cohort: 56 train / 16 healthy reference / 24 held out,
lesioned copies of the held-out scans; the test split is never used).

With the scan's drift put back (``vae3d.anomaly.with_drift``), what is left of a healthy scan's map
is the restorer's own errors: a pass gets a septum, a sulcus or a cortical fold a little wrong, in
a different way for each input. Averaging passes over transformed copies of the scan (each
transformed back) cancels part of that error, while a lesion, which the restorer removes in every
pass, stays. Every row makes the product's map (``vae3d.anomaly``: the shipped restorer and head,
calibrated leave-one-out on the reference scans, the drift put back, the envelope subtracted) from
one restoration:

- one pass (the map before);
- averaged with the pass over the left-right mirrored scan (``vae3d.inference.reconstruct(...,
  mirror=True)``, two passes);
- averaged over the 8 offsets of the stem's patch (``reconstruct_shift_averaged``, 8 passes);
- both (16 passes).

Columns: the share of an inserted lesion the restoration gives back, the healthy held-out scans'
mean absolute restoration error, the normalised residual alone and the map with the head (voxel
AUPRC / best Dice / volume AUROC at the stored top fraction), the share of lesioned and of healthy
held-out scans flagged at the calibrated threshold, and the seconds per restored scan.

    python -m bench.anomaly_tta
"""

from __future__ import annotations

import argparse
import time

import torch

from bench.anomaly_levers import _row
from bench.common import anomaly_dev_data, anomaly_restorer, dev_meta, held_out_overlay, write_result

#: (row, passes over the scan and its mirror image, shift-averaged)
ROWS = (("one pass (before)", False, False), ("mirror-averaged (adopted)", True, False),
        ("shift-averaged (x8)", False, True), ("shift- and mirror-averaged (x16)", True, True))
CHOSEN = "mirror-averaged (adopted)"


def run(n: int = 96, figure: bool = True) -> dict:
    from vae3d import anomaly
    from vae3d.inference import LEFT_RIGHT, reconstruct_all, reconstruct_shift_averaged
    from vae3d.pretrained import load_head

    d = anomaly_dev_data(n)
    sets = {k: d[k] for k in ("val", "held", "lesioned")}
    restorer = anomaly_restorer(d["val"].shape[-1])
    head, rows = load_head(), []

    def shifted(x: torch.Tensor, mirror: bool) -> torch.Tensor:
        one = torch.cat([reconstruct_shift_averaged(restorer, c) for c in x.split(4)])
        if not mirror:
            return one
        flip = torch.cat([reconstruct_shift_averaged(restorer, c.flip(LEFT_RIGHT)) for c in x.split(4)])
        return (one + flip.flip(LEFT_RIGHT)) / 2

    for name, mirror, shift in ROWS:
        t = time.perf_counter()
        rec = {k: shifted(x, mirror) if shift else reconstruct_all(restorer, x, mirror=mirror) for k, x in sets.items()}
        per_scan = (time.perf_counter() - t) / sum(len(x) for x in sets.values())
        t = time.perf_counter()
        row = _row(name, sets, rec, d["masks"], head, anomaly.HEAD_TEMPERATURE, anomaly.HEAD_SIGMA)
        ml, thr = row.pop("maps")
        if figure and name == CHOSEN:
            held_out_overlay(d, ml, thr, "anomaly_tta")
        rows.append({**row, "seconds_per_scan": per_scan, "seconds": time.perf_counter() - t})
        print(rows[-1], flush=True)
    return {**dev_meta(d), "top_fraction": anomaly.TOP_FRACTION, "chosen": CHOSEN, "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-figure", action="store_true", help="skip bench/results/anomaly_tta.png")
    a = ap.parse_args()
    print(write_result("anomaly_tta", run(figure=not a.no_figure)))


if __name__ == "__main__":
    main()
