"""Whether a scan's own residual level should divide its map (#19), side by side on development data
(a cohort none of the shipped networks saw; the test split is never used).

The product's map reads the residual normalised voxel by voxel by healthy scans' residuals at the same
place (``vae3d.anomaly``). Healthy scans differ in how well the restorer restores them everywhere (their
noise, an unusual head): a scan it errs on all over has more voxels at a high ``|z|``, and its hottest
voxels, which make its score, rank it among lesioned scans. Each row divides a scan's ``|z|`` by its own
residual level (the 90th percentile of ``|z|`` in the brain, ``vae3d.anomaly.scan_scale``) to a power:
0 is the map before; 1 measures every residual in units of the scan's own. A lesion is too small to
move the level, but a lesioned copy of a noisy scan loses score too, so only a measurement says which
way the ranking goes.

The data and draws are ``bench.anomaly_score_fusion``'s (``cohort_restorations``: every scan of the cohort
healthy and lesioned once); each draw takes ``--calibration`` scans as a validation split (statistics,
head envelope, leave-one-out maps, all made with the row's power), sets the row's threshold on its
calibration scores (5% at 90% confidence) and scores the other scans. Columns as in
``bench.anomaly_top_fraction``.

    python -m bench.anomaly_scan_scale --draws 20 --seed 0
    python -m bench.anomaly_scan_scale --draws 20 --seed 5 --n 64
"""

from __future__ import annotations

from bench.anomaly_score_fusion import draws_main, draws_result, run_draws, summary

POWERS = (0.0, 0.25, 0.5, 1.0)


def run(draws: int = 20, calibration: int = 15, n: int = 96, seed: int = 0, powers: tuple = POWERS) -> dict:
    from vae3d import anomaly

    rows, shape, seconds = run_draws(
        n, seed, draws, calibration, powers,
        lambda power, maps: [anomaly.anomaly_score(a).numpy() for a in maps(scan_scale_power=power)])
    out = [{"power": p, "chosen": p == anomaly.SCAN_SCALE_POWER, **summary(r)} for p, r in rows.items()]
    return draws_result(out, seed, n, draws, calibration, shape[0], seconds)


def main() -> None:
    draws_main(__doc__, "anomaly_scan_scale", run)


if __name__ == "__main__":
    main()
