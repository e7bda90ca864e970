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

import math

from bench.anomaly_score_fusion import draws_main, draws_result, run_draws, summary

TOPS = (0.000004, 0.00002, 0.00005, 0.0001, 0.0002, 0.0005)  # 0.000004: the hottest voxel alone (of 64^3)


def run(draws: int = 40, calibration: int = 15, n: int = 96, seed: int = 0, tops: tuple = TOPS) -> dict:
    from vae3d import anomaly

    rows, shape, seconds = run_draws(n, seed, draws, calibration, tops,
                                     lambda top, maps: [anomaly.anomaly_score(a, top).numpy() for a in maps()])
    out = [{"top_fraction": top, "voxels": max(1, int(math.prod(shape[1:]) * top)),
            "chosen": top == anomaly.TOP_FRACTION, **summary(r)} for top, r in rows.items()]
    return draws_result(out, seed, n, draws, calibration, shape[0], seconds)


def main() -> None:
    draws_main(__doc__, "anomaly_top_fraction", run)


if __name__ == "__main__":
    main()
