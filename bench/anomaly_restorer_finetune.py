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
    python -m bench.anomaly_restorer_finetune --minutes 6.4 --lrs 2e-3 --other-protocol
    python -m bench.anomaly_restorer_finetune --minutes 6.4 --lrs 2e-3 --average 0.5 [--other-protocol]

The development cohort comes from the shipped restorer's own generator, so there a fine-tune has nothing
to adapt to. ``--other-protocol`` asks what it is for: every scan (training, reference and held out, before
the lesions are drawn) as another scanner's protocol would give it (``bench.common.OTHER_PROTOCOL``: tissue
contrast bent by a gamma, more Rician noise), a shift the shipped restorer never saw. ``--average`` adds,
for each fine-tune, its weights averaged with the shipped restorer's (WiSE-FT), one row per share.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch

from bench.common import (
    OTHER_PROTOCOL,
    restorer_bench_inputs,
    restorer_bench_result,
    restorer_row,
    trained_fields,
    trained_restorer,
    write_result,
)
from vae3d.training.restorer_choice import choose_restorer


def averaged(shipped: torch.nn.Module, tuned: torch.nn.Module, weight: float) -> torch.nn.Module:
    """A copy of ``tuned`` whose weights are ``weight`` x the shipped restorer's + (1 - ``weight``) x its own
    (weight-space ensembling of a fine-tune with its start, WiSE-FT: Wortsman et al., CVPR 2022; three lines,
    so hand-written)."""
    out = copy.deepcopy(tuned)
    start = shipped.state_dict()
    out.load_state_dict({k: weight * start[k] + (1 - weight) * v if v.is_floating_point() else v
                         for k, v in tuned.state_dict().items()})
    return out.eval()


def run(minutes: float, lrs: list[float], n: int = 96, protocol: dict | None = None,
        averages: tuple[float, ...] = (), choose: bool = False) -> dict:
    d, lesioned, masks, head, shipped = restorer_bench_inputs(n, protocol)
    rows = [{**restorer_row("shipped restorer, no fine-tuning", shipped, d, lesioned, masks, head), "epochs": 0}]
    print(rows[-1], flush=True)
    for lr in lrs:
        model, result, seconds = trained_restorer(d["train"], d["val"], minutes,
                                                  Path(f"/tmp/vae3d-restorer-finetune/{lr:g}"), lr=lr)
        trained = {**trained_fields(result, seconds), "lr": lr}
        rows.append({**restorer_row(f"fine-tuned, peak lr {lr:g}", model, d, lesioned, masks, head), **trained})
        if choose:  # what the product's choice on the reference (validation) scans makes of it, in its order
            chosen, figures = choose_restorer({"shipped": shipped, "fine-tuned": model}, d["val"], 0, head)
            rows[-1]["choice"] = {"chosen": chosen, **figures}
        print(rows[-1], flush=True)
        for w in averages:
            rows.append({**restorer_row(f"fine-tuned, peak lr {lr:g}, weights averaged with the shipped ones "
                                        f"({w:g} of theirs)", averaged(shipped, model, w), d, lesioned, masks, head),
                         **trained, "average": w})
            print(rows[-1], flush=True)
    return restorer_bench_result(minutes, n, d, lesioned, rows, protocol=protocol)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=6.4, help="fine-tuning budget per row (a quality run's: 6.4)")
    ap.add_argument("--lrs", type=float, nargs="+", default=[2e-3, 2e-4], help="peak learning rates, one row each")
    ap.add_argument("--other-protocol", action="store_true",
                    help=f"every scan as another scanner's protocol gives it first (bench.common.OTHER_PROTOCOL: "
                         f"{OTHER_PROTOCOL}); results to anomaly_restorer_finetune_protocol")
    ap.add_argument("--average", type=float, nargs="*", default=[],
                    help="also each fine-tune's weights averaged with the shipped restorer's, this share theirs "
                         "(one row each); results to ..._average")
    ap.add_argument("--choose", action="store_true",
                    help="also what the product's choice between each fine-tune and the shipped restorer "
                         "(vae3d.training.restorer_choice) makes of them on the reference scans; results to ..._choose")
    a = ap.parse_args()
    protocol = OTHER_PROTOCOL if a.other_protocol else None
    name = "anomaly_restorer_finetune" + ("_protocol" if protocol else "") + ("_average" if a.average else "") + (
        "_choose" if a.choose else "")
    print(write_result(name, run(a.minutes, a.lrs, protocol=protocol, averages=tuple(a.average), choose=a.choose)))


if __name__ == "__main__":
    main()
