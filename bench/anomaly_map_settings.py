"""The anomaly map's settings side by side (#19) on the development data of
``bench.anomaly_ablation`` (the seed-0 cohort: 56 train / 16 healthy reference / 24 held out,
lesioned copies of the held-out scans), with the shipped anomaly restorer (``vae3d/pretrained``,
``"anomaly"``), no fine-tuning.

The reconstructions are computed once; each row changes only how the map is made from them:
the plain residual or the healthy-normalised one (``vae3d.anomaly``) with a floor under the
healthy spread (``std_floor``), the map's smoothing (``sigma``, voxels), and the share of
top voxels a scan's score averages (``top_fraction``, scored as volume AUROC):

    python -m bench.anomaly_map_settings
"""

from __future__ import annotations

import itertools

from bench.common import anomaly_dev_data, anomaly_restorer, lesion_kept, map_scores, write_result

FLOORS = (None, 0.02, 0.035, 0.05, 0.07, 0.1)  # None: the plain residual
SIGMAS = (0.5, 1.0, 1.5, 2.0)
TOP_FRACTIONS = (0.0002, 0.0005, 0.001, 0.003)


def run(n: int = 96) -> dict:
    from vae3d import anomaly
    from vae3d.inference import reconstruct_all

    d = anomaly_dev_data(n)
    val, held, lesioned, masks = d["val"], d["held"], d["lesioned"], d["masks"]
    model = anomaly_restorer(val.shape[-1])
    rv, rh, rl = (reconstruct_all(model, v) for v in (val, held, lesioned))
    rows = []
    for floor, sigma in itertools.product(FLOORS, SIGMAS):
        stats = None if floor is None else anomaly.fit_healthy(val, rv, std_floor=floor)
        m_les = anomaly.anomaly_map(lesioned, rl, stats, sigma=sigma)
        m_h = anomaly.anomaly_map(held, rh, stats, sigma=sigma)
        row = {"map": "residual" if floor is None else "healthy-normalised", "std_floor": floor, "sigma": sigma,
               **map_scores(m_h, m_les, masks, TOP_FRACTIONS)}
        rows.append(row)
        print(row, flush=True)
    return {"n": n, "split": [len(d["train"]), len(val), len(held)],
            "lesion_kept": lesion_kept(held, lesioned, rl, masks), "rows": rows, "lesions": d["lesions"],
            "chosen": {"std_floor": anomaly.STD_FLOOR, "sigma": anomaly.SIGMA, "top_fraction": anomaly.TOP_FRACTION}}


if __name__ == "__main__":
    print(write_result("anomaly_map_settings", run()))
