"""Candidate anomaly heads against the shipped one (#19), side by side on both development cohorts (the
test split of a quality run is never used).

Each head is a file ``python -m vae3d.pretrained.build --which head --out FILE`` wrote (trained on the
head's own cohort, which no benchmark scores). Every map is the product's (``vae3d.anomaly``: the
shipped restorer's mirror-averaged restorations with the drift put back, statistics, envelope and
threshold calibrated leave-one-out on the healthy reference scans), made with one head:

- the seed-0 cohort of ``bench.anomaly_ablation`` (16 healthy reference / 24 held out, each held-out
  scan lesioned three times: 72 copies), the data of the restorer benchmarks;
- a seed-5 cohort (64 scans: 16 healthy reference / 48 held out, each lesioned once).

Columns per cohort: voxel AUPRC / best Dice / volume AUROC, and the shares of lesioned / healthy
held-out scans flagged at the calibrated threshold.

    python -m bench.anomaly_head_candidate --candidate FILE LABEL [--candidate FILE LABEL ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.common import (
    dev_restorations,
    preprocessed_tensors,
    restorer_bench_inputs,
    restorer_row,
    write_result,
)

SECOND_COHORT = {"seed": 5, "n": 64, "reference": 16}  # the second development cohort


def _cohorts(n: int = 96) -> dict:
    """Each development cohort's (data, lesioned copies, masks, restorations), the shipped restorer's."""
    from vae3d.evaluation.anomaly import lesioned_copies

    d, lesioned, masks, _, restorer = restorer_bench_inputs(n)
    out = {"seed 0": (d, lesioned, masks)}
    vols = preprocessed_tensors(SECOND_COHORT["n"], seed=SECOND_COHORT["seed"])
    second = {"val": vols[: SECOND_COHORT["reference"]], "held": vols[SECOND_COHORT["reference"] :]}
    out["seed 5"] = (second, *lesioned_copies(second["held"], seed=1))
    return {k: (d, les, m, dev_restorations(restorer, d, les)) for k, (d, les, m) in out.items()}, restorer


def run(candidates: list[tuple[Path, str]], n: int = 96) -> dict:
    from vae3d.pretrained import load_head

    cohorts, restorer = _cohorts(n)
    heads = [("shipped head", None), *[(label, path) for path, label in candidates]]
    rows = []
    for label, path in heads:
        head = load_head(path)
        row = {"row": label, "file": None if path is None else str(path),
               "mirror": head.mirror, "train": head.description.get("train")}
        for cohort, (d, lesioned, masks, restored) in cohorts.items():
            m = restorer_row(label, restorer, d, lesioned, masks, head, restored)
            row[cohort] = {k: m[k] for k in ("voxel_auprc", "best_dice", "volume_auroc", "flagged", "healthy_flagged")}
        rows.append(row)
        print(json.dumps(row), flush=True)
    split = {k: [len(d["val"]), len(d["held"]), len(les)] for k, (d, les, _, _) in cohorts.items()}
    return {"n": n, "second_cohort": SECOND_COHORT, "split": split, "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidate", nargs=2, action="append", metavar=("FILE", "LABEL"), default=[],
                    help="a head file and its row's name (repeat for more)")
    a = ap.parse_args()
    print(write_result("anomaly_head_candidate", run([(Path(f), label) for f, label in a.candidate])))


if __name__ == "__main__":
    main()
