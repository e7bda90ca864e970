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

from bench.common import RESULTS, anomaly_dev_data, write_result

COPIES = 6  # anomalous copies of each training scan


def _score(healthy: torch.Tensor, lesioned: torch.Tensor, masks: torch.Tensor) -> dict:
    from vae3d import anomaly
    from vae3d.evaluation import anomaly as metrics

    out = metrics.voxel_metrics(lesioned, masks)
    for top in (anomaly.TOP_FRACTION, 0.0001):
        out[f"volume_auroc_top{top}"] = metrics.volume_auroc(anomaly.anomaly_score(healthy, top).numpy(),
                                                             anomaly.anomaly_score(lesioned, top).numpy())
    return out


def run(steps: int, only: list[str], figure: bool = False, n: int = 96, seed: int = 0) -> dict:
    from vae3d import anomaly
    from vae3d.anomaly_head import build_head, fit_head, head_inputs, head_map, training_set
    from vae3d.config import ModelConfig
    from vae3d.inference import reconstruct_all
    from vae3d.model import VAE3D
    from vae3d.pretrained import load_pretrained

    d = anomaly_dev_data(n)
    train, val, held, lesioned, masks = d["train"], d["val"], d["held"], d["lesioned"], d["masks"]
    restorer = load_pretrained(VAE3D(input_size=train.shape[-1], **ModelConfig().model_dump()), "anomaly").eval()
    rv, rh, rl = (reconstruct_all(restorer, v) for v in (val, held, lesioned))
    stats = anomaly.fit_healthy(val, rv)
    product = (anomaly.anomaly_map(held, rh, stats), anomaly.anomaly_map(lesioned, rl, stats))
    rows = [{"map": "normalised residual (the product's)", **_score(*product, masks)}]
    print(rows[-1], flush=True)
    images, labels = training_set(train, COPIES, seed)
    restored = reconstruct_all(restorer, images)
    maps = {}
    for name in ("head", "head, scan only"):
        if name not in only:
            continue
        scan_only = name.endswith("scan only")
        torch.manual_seed(seed)
        head = build_head()
        t0 = time.perf_counter()
        losses = fit_head(head, head_inputs(images, images if scan_only else restored),
                                       labels, steps, seed, progress=lambda s, v, name=name: print(
                                           f"  {name} step {s} loss {v:.3f}", flush=True))
        train_s = time.perf_counter() - t0
        maps[name] = tuple(head_map(head, x, x if scan_only else r) * stats.brain
                           for x, r in ((held, rh), (lesioned, rl)))
        tail = losses[-100:]
        rows.append({"map": name, "steps": steps, "train_s": train_s, "final_loss": sum(tail) / len(tail),
                     **_score(*maps[name], masks)})
        print(rows[-1], flush=True)
    if "head" in maps:
        geo = tuple((h * p).sqrt() for h, p in zip(maps["head"], product, strict=True))
        rows.append({"map": "head x normalised residual", **_score(*geo, masks)})
        print(rows[-1], flush=True)
        if figure:
            from vae3d.figures import anomaly_overlay

            for name, (mh, ml) in (("normalised_residual", product), ("head", maps["head"])):
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
