"""A discriminative anomaly head on the restorer's output (#19), side by
side with the product's healthy-normalised residual, on the development data of
``bench.anomaly_ablation`` (the seed-0 cohort: 56 train / 16 healthy reference / 24 held out,
lesioned copies of the held-out scans; the test split is never used).

The shipped anomaly restorer (``vae3d/pretrained``, ``"anomaly"``) restores every scan. The heads
train on the 56 training scans with synthetic anomalies (``vae3d.anomaly_head``, a generator unlike
the benchmark's lesions), the same number of steps each:

- ``head``: the scan and the restorer's residual in (DRAEM's set-up);
- ``head, scan only``: the scan alone (the residual channel is zero): is the restorer needed?
- ``head x normalised residual``: the geometric mean of ``head``'s map and the product's map.

Each map is scored inside the healthy brain mask: voxel AUPRC, best Dice, and volume AUROC of the
mean of the top 0.05% and 0.01% of voxels. ``--figure`` writes overlays of four held-out cases
for both maps.

    python -m bench.anomaly_head --steps 2000

The head and its synthetic anomalies: ``vae3d.anomaly_head``.
"""

from __future__ import annotations

import argparse
import time

import torch

from bench.anomaly_envelope import less_envelope
from bench.common import RESULTS, anomaly_dev_data, anomaly_restorer, map_scores, write_result

COPIES = 6  # anomalous copies of each training scan
TOPS = (0.0005, 0.0002, 0.0001)  # the score's top fractions: the product's before and since 2026-12-04, a smaller one


def _score(reference: torch.Tensor, healthy: torch.Tensor, lesioned: torch.Tensor, masks: torch.Tensor) -> dict:
    scores = map_scores(healthy, lesioned, masks, TOPS, calibration=reference)
    auroc = scores.pop("volume_auroc")
    return {**scores, **{f"volume_auroc_top{t}": v for t, v in auroc.items()}}


def run(steps: int, only: list[str], figure: bool = False, n: int = 96, seed: int = 0) -> dict:
    from vae3d import anomaly
    from vae3d.anomaly_head import build_head, fit_head, head_inputs, head_map, training_set
    from vae3d.inference import reconstruct_all

    d = anomaly_dev_data(n)
    train, val, held, lesioned, masks = d["train"], d["val"], d["held"], d["lesioned"], d["masks"]
    restorer = anomaly_restorer(train.shape[-1])
    rv, rh, rl = (reconstruct_all(restorer, v) for v in (val, held, lesioned))
    stats = anomaly.fit_healthy(val, rv)
    loo = [anomaly.fit_healthy(torch.cat([val[:i], val[i + 1 :]]), torch.cat([rv[:i], rv[i + 1 :]]))
           for i in range(len(val))]  # each reference scan is seen through the others' statistics
    product = (torch.cat([anomaly.anomaly_map(val[i : i + 1], rv[i : i + 1], s) for i, s in enumerate(loo)]),
               anomaly.anomaly_map(held, rh, stats), anomaly.anomaly_map(lesioned, rl, stats))
    rows = [{"map": "normalised residual (the product's)", **_score(*product, masks)}]
    print(rows[-1], flush=True)
    images, labels = training_set(train, COPIES, seed)
    restored = reconstruct_all(restorer, images)
    maps = {}
    z_of = lambda x, r, s=stats: (x - r - s.mean) / s.std
    for name in ("head", "head, scan only", "head, with normalised residual"):
        if name not in only:
            continue
        scan_only, with_z = name.endswith("scan only"), name.endswith("normalised residual")
        torch.manual_seed(seed)
        head = build_head(in_channels=3 if with_z else 2)
        t0 = time.perf_counter()
        losses = fit_head(head, head_inputs(images, images if scan_only else restored,
                                            z_of(images, restored) if with_z else None),
                          labels, steps, seed, progress=lambda s, v, name=name: print(
                              f"  {name} step {s} loss {v:.3f}", flush=True))
        train_s = time.perf_counter() - t0
        on = lambda x, r, s=stats, scan_only=scan_only, with_z=with_z, head=head: head_map(
            head, x, x if scan_only else r, z_of(x, r, s) if with_z else None) * stats.brain
        maps[name] = (torch.cat([on(val[i : i + 1], rv[i : i + 1], s) for i, s in enumerate(loo)]),
                      on(held, rh), on(lesioned, rl))
        tail = losses[-100:]
        rows.append({"map": name, "steps": steps, "train_s": train_s, "final_loss": sum(tail) / len(tail),
                     **_score(*maps[name], masks)})
        print(rows[-1], flush=True)
        if scan_only:
            continue
        geo = tuple((h * p).sqrt() for h, p in zip(maps[name], product, strict=True))
        rows.append({"map": f"{name} x normalised residual", **_score(*geo, masks)})
        rows.append({"map": f"{name} x normalised residual - envelope",
                     **_score(*less_envelope(geo[0], geo[1:], "mean", 1.0), masks)})
        print(rows[-2:], flush=True)
    if figure and "head" in maps:
        from vae3d.figures import anomaly_overlay

        for name, (_, mh, ml) in (("normalised_residual", product), ("head", maps["head"])):
            cases = [{"label": f"held-out {i}", "image": lesioned[i, 0].numpy(), "map": ml[i, 0].numpy(),
                      "mask": masks[i, 0].numpy()} for i in range(4)]
            thr = float(torch.quantile(mh[mh > 0][::20].float(), 0.999))  # healthy scans' 99.9th percentile
            anomaly_overlay(cases, thr).savefig(RESULTS / f"anomaly_head_{name}.png", dpi=80)
    return {"steps": steps, "copies": COPIES, "n": n, "split": [len(train), len(val), len(held)],
            "lesions": d["lesions"], "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=2000, help="training steps per head (batch 8 of 32^3 crops)")
    ap.add_argument("--only", default="head;head, scan only", help="';'-separated heads to train")
    ap.add_argument("--figure", action="store_true", help="write bench/results/anomaly_head_*.png")
    ap.add_argument("--name", default="anomaly_head", help="results file (bench/results/NAME.json)")
    a = ap.parse_args()
    print(write_result(a.name, run(a.steps, a.only.split(";"), a.figure)))


if __name__ == "__main__":
    main()
