"""How many of a map's hottest voxels a scan's score averages (#19), side by side on development data
(a cohort none of the shipped networks saw; the test split is never used).

The per-volume score is the mean of the product map's top ``top_fraction`` voxels
(``vae3d.anomaly.anomaly_score``). Its 0.0002 (52 of 64^3 voxels: a lesion of radius about 2.3) was
chosen on 2026-12-04 ('Anomaly detection: the healthy envelope and the score'), before the map put the
scan's drift back, averaged its restorations with the mirrored scan's, and before the restorer's four
continuations: the map has changed since, and this asks again. A small lesion is a few voxels; a
score over fewer voxels hears it more but hears healthy noise more too, so the calibrated threshold
must keep its promise as well.

The data and draws are ``bench.anomaly_score_fusion``'s: every scan of the cohort healthy and lesioned
once (``cohort_restorations``); each draw takes ``--calibration`` scans of the pool as a validation
split (statistics, head envelope, leave-one-out maps), sets each row's threshold on its calibration
scores (``score_threshold``, 5% at 90% confidence) and scores the other scans. One set of maps per
draw; each row scores them over its own top fraction. Columns, over the draws: the volume AUROC (its
mean and 10th percentile), the share of 14-subject subsets (a quality run's test split) whose AUROC
reaches 0.95, the shares of lesioned and healthy scans flagged, and the share of draws flagging at
most 5% of the healthy scans (what the threshold's 90% confidence promises).

    python -m bench.anomaly_top_fraction --draws 40 --seed 0
    python -m bench.anomaly_top_fraction --draws 40 --seed 5 --n 64
"""

from __future__ import annotations

import time

import numpy as np

from bench.anomaly_score_fusion import (
    calibration_draw,
    cohort_restorations,
    draw_maps,
    draws_arguments,
    draws_result,
    record,
    summary,
)
from bench.common import CachedHead, write_result

TOPS = (0.000004, 0.00002, 0.00005, 0.0001, 0.0002, 0.0005)  # 0.000004: the hottest voxel alone (of 64^3)


def run(draws: int = 40, calibration: int = 15, n: int = 96, seed: int = 0, tops: tuple = TOPS) -> dict:
    from vae3d import anomaly
    from vae3d.pretrained import load_head

    pool, healthy, lesioned, rec = cohort_restorations(n, seed)
    head = CachedHead(load_head())
    rng = np.random.default_rng(seed)
    rows: dict[float, dict] = {top: {} for top in tops}
    t = time.perf_counter()
    for i in range(draws):
        pick, subsets = calibration_draw(rng, len(pool), len(healthy), calibration)
        maps = draw_maps(healthy, lesioned, rec, pick, head)
        for top, r in rows.items():
            record(r, *(anomaly.anomaly_score(a, top).numpy() for a in maps), subsets)
        if (i + 1) % 5 == 0:
            print(f"draw {i + 1}/{draws}: {time.perf_counter() - t:.0f} s; "
                  + "; ".join(f"{k:g}: {np.mean(v['auroc']):.4f}" for k, v in rows.items()), flush=True)
    out = [{"top_fraction": top, "voxels": max(1, int(healthy[0].numel() * top)),
            "chosen": top == anomaly.TOP_FRACTION, **summary(r)} for top, r in rows.items()]
    return draws_result(out, seed, n, draws, calibration, len(healthy), time.perf_counter() - t)


def main() -> None:
    a = draws_arguments(__doc__)
    print(write_result(f"anomaly_top_fraction_seed{a.seed}", run(a.draws, a.calibration, a.n, a.seed)))


if __name__ == "__main__":
    main()
