"""Does the quality run's fine-tune of the shipped anomaly restorer help its map, and at what learning
rate (#19)? Side by side on the development data of ``bench.anomaly_ablation`` (the seed-0 cohort:
56 train / 16 healthy reference / 24 held out; the test split is never used).

With ``train.init: pretrained`` the restorer starts from the shipped one and trains on the cohort's
own scans for ``train.anomaly.budget_share`` of the budget (6.4 of a quality run's 16 minutes), with
the training's warmup and cosine schedule at ``train.lr`` (2e-3, the main model's). The shipped
restorer had trained 810 epochs when this first ran (1560 when it ran again), each continuation annealed to a low
rate; a fine-tune at the full rate may undo part of that. Each row fine-tunes it for the same wall clock on the training
scans at one peak learning rate; the first row is the shipped restorer without fine-tuning.

Every map is the product's (``vae3d.anomaly``: the shipped head, statistics and envelope calibrated
leave-one-out on the 16 reference scans, mirror-averaged restoration, the drift put back). The 24
held-out scans are lesioned three times (seeds 1, 2, 3: 72 copies). Columns: training epochs, the
share of a lesion the restoration gives back, the healthy held-out scans' mean absolute restoration
error, voxel AUPRC / best Dice / volume AUROC (24 healthy against 72 lesioned), and the shares of
lesioned / healthy scans flagged at the calibrated threshold.

    python -m bench.anomaly_restorer_finetune --minutes 6.4 --lrs 2e-3 2e-4
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.common import (
    restorer_bench_inputs,
    restorer_bench_result,
    restorer_row,
    trained_fields,
    trained_restorer,
    write_result,
)


def run(minutes: float, lrs: list[float], n: int = 96) -> dict:
    d, lesioned, masks, head, shipped = restorer_bench_inputs(n)
    rows = [{**restorer_row("shipped restorer, no fine-tuning", shipped, d, lesioned, masks, head), "epochs": 0}]
    print(rows[-1], flush=True)
    for lr in lrs:
        model, result, seconds = trained_restorer(d["train"], d["val"], minutes,
                                                  Path(f"/tmp/vae3d-restorer-finetune/{lr:g}"), lr=lr)
        rows.append({**restorer_row(f"fine-tuned, peak lr {lr:g}", model, d, lesioned, masks, head),
                     **trained_fields(result, seconds), "lr": lr})
        print(rows[-1], flush=True)
    return restorer_bench_result(minutes, n, d, lesioned, rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=6.4, help="fine-tuning budget per row (a quality run's: 6.4)")
    ap.add_argument("--lrs", type=float, nargs="+", default=[2e-3, 2e-4], help="peak learning rates, one row each")
    a = ap.parse_args()
    print(write_result("anomaly_restorer_finetune", run(a.minutes, a.lrs)))


if __name__ == "__main__":
    main()
