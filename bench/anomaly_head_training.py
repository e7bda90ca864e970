"""How the anomaly head is trained (#19), side by side on the development data of
``bench.anomaly_ablation`` (the seed-0 cohort: 16 healthy reference / 24 held out, lesioned copies
of the held-out scans; the test split is never used).

The healthy held-out scans' hottest voxels are the restorer's own errors inside tissue, and the
head marks them as anomalies (BENCHMARKS.md, "Anomaly detection: levers for the map"). Every row
continues one starting head (``--start``, default the shipped one) for ``--steps`` steps at
``vae3d.pretrained.build.HEAD_FINETUNE_LR`` on the head's own cohort (``HEAD_SEED``: scans the
shipped restorer never saw) with one change to what it learns from:

- the same recipe (how much is just more training);
- hard negatives: a share of the crops centred on a scan's largest restoration errors away from
  any anomaly (``vae3d.anomaly_head.hard_negatives``);
- fainter targets dropped: only voxels an anomaly changed by more than 0.1 (not 0.04) are targets;
- both, and both with half the crops on hard negatives.

The last row is the head shipped now (what ``python -m vae3d.pretrained.build --which head --steps
1000 --from-shipped`` made). Each row makes the product's map (``vae3d.anomaly``: the tempered head,
calibrated leave-one-out on the reference scans, the envelope subtracted): voxel AUPRC / best Dice /
volume AUROC, and the shares of lesioned and healthy held-out scans flagged at the calibrated
threshold.

    git show 4cbf4d8:vae3d/pretrained/vae3d_64cube_3mm_anomaly_head.pt > /tmp/head0.pt
    python -m bench.anomaly_head_training --start /tmp/head0.pt
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from bench.anomaly_levers import _row
from bench.common import anomaly_dev_data, anomaly_restorer, write_result

#: (row, hard-negative share, label change); None: the starting head, untrained
ROWS = (
    ("start", None, None),
    ("same recipe", 0.0, 0.04),
    ("30% hard negatives (adopted)", 0.3, 0.04),
    ("targets: changes > 0.1", 0.0, 0.1),
    ("30% hard negatives, changes > 0.1", 0.3, 0.1),
    ("50% hard negatives, changes > 0.1", 0.5, 0.1),
)


def run(start: Path | None, steps: int, n: int = 96) -> dict:
    from vae3d import anomaly
    from vae3d.anomaly_head import fit_head, head_inputs, training_set
    from vae3d.inference import reconstruct_all
    from vae3d.pretrained import load_head
    from vae3d.pretrained.build import HEAD_COPIES, HEAD_FINETUNE_LR, HEAD_SEED, _cohort

    d = anomaly_dev_data(n)
    sets = {k: d[k] for k in ("val", "held", "lesioned")}
    restorer = anomaly_restorer(d["val"].shape[-1])
    rec = {k: reconstruct_all(restorer, x) for k, x in sets.items()}
    with tempfile.TemporaryDirectory(prefix="vae3d-bench-") as tmp:
        vols = _cohort(60, Path(tmp), HEAD_SEED)
    rows, data = [], {}  # label change -> (head inputs, labels)
    for name, hard_share, label_change in ROWS:
        t = time.perf_counter()
        head = load_head(start)
        if hard_share is not None:
            if label_change not in data:
                images, labels = training_set(vols, HEAD_COPIES, 0, label_change=label_change)
                inputs = head_inputs(images, reconstruct_all(restorer, images), mirror=head.mirror)
                data[label_change] = (inputs, labels)
            inputs, labels = data[label_change]
            torch.manual_seed(1)
            fit_head(head.train(), inputs, labels, steps, seed=1, lr=HEAD_FINETUNE_LR, hard_share=hard_share)
        row = _row(name, sets, rec, d["masks"], head.eval(), anomaly.HEAD_TEMPERATURE, anomaly.HEAD_SIGMA)
        row.pop("maps")
        rows.append({**row, "hard_share": hard_share, "label_change": label_change,
                     "seconds": time.perf_counter() - t})
        print(rows[-1], flush=True)
    row = _row("shipped now", sets, rec, d["masks"], load_head(), anomaly.HEAD_TEMPERATURE, anomaly.HEAD_SIGMA)
    row.pop("maps")
    rows.append(row)
    return {"n": n, "split": [len(d["train"]), len(d["val"]), len(d["held"])], "steps": steps,
            "start": str(start or "shipped"), "lesions": d["lesions"], "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--start", type=Path, default=None, help="the head file every row continues (default: shipped)")
    ap.add_argument("--steps", type=int, default=1000, help="training steps per row (batch 8 of 32^3 crops)")
    a = ap.parse_args()
    print(write_result("anomaly_head_training", run(a.start, a.steps)))


if __name__ == "__main__":
    main()
