"""Does a restorer with a coarser latent or a wider view give back less of a lesion (#19)? Side by
side on the development data of ``bench.anomaly_ablation`` (the seed-0 cohort: 56 train / 16 healthy
reference / 24 held out; the test split is never used).

'Anomaly detection: the volume score' bounds the product's map: restored as their healthy scans
were, lesioned copies reach AUROC 0.993 against 0.948, so the restorer giving back part of each
lesion (38%) is what holds the map back. Fine-tuning its training mix did not change that
('restorers trained on other corruptions', 'a restorer that removes blobs'). This asks whether its
architecture does: the shipped restorer is one level of 16 channels after a stride-2 stem, with a
32^3 x 4 latent (half as many numbers as the 64^3 scan: room to copy a lesion) and a view of about
20 voxels. Each row trains a restorer of one architecture from scratch for the same wall clock on the
training scans, with the restorer's coarse-noise mix (``vae3d.config.COARSE_NOISE``):

- ``32^3 x 4``: the shipped architecture (the control);
- ``16^3 x 8, two levels``: a second level of 32 channels after a downsampling (a quarter of the
  latent's numbers, twice the view, 1.5x the seconds per step);
- ``16^3 x 8, stride-4 stem``: one level of 32 channels after a stride-4 stem (the same latent size,
  0.4x the seconds per step, so 2.4x the steps in the budget).

The shipped restorer, trained for longer on another cohort, is the first row (46 minutes when this
first ran; 104, 159, 214, 271 and then 335 since the 250-epoch continuations of the stored second,
third, fourth and fifth rows, and a fifth continuation measured with today's map (the section's notes),
were shipped). Each restorer's
maps: the normalised residual alone (``vae3d.anomaly`` without a head) and the product's (with the
shipped head, which learned from the 46-minute restorer's output, so it favours the shipped rows). The 24
held-out scans are lesioned three times (72 copies). Columns: epochs in the budget, val SSIM, the
share of a lesion the restoration gives back, the healthy held-out scans' mean absolute restoration
error, and for each map voxel AUPRC / best Dice / volume AUROC (24 healthy against 72 lesioned).

    python -m bench.anomaly_restorer_capacity --minutes 12

A candidate restorer (a file ``python -m vae3d.pretrained.build --which anomaly --out`` wrote, e.g.
a continuation of the shipped one) is measured against the shipped one on the same data, with no
training; ``--store`` adds its row to the stored result, after the shipped restorer's earlier
continuations, as each shipped continuation's row was:

    python -m bench.anomaly_restorer_capacity --candidate /tmp/cand/plus250.pt --label "..." [--store]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.common import (
    RESULTS,
    anomaly_restorer,
    dev_restorations,
    restorer_bench_inputs,
    restorer_bench_result,
    restorer_row,
    trained_fields,
    trained_restorer,
    write_result,
)

ROWS = {
    "32^3 x 4 (the shipped architecture)": {"channels": (16,), "patch_size": 2, "latent_channels": 4},
    "16^3 x 8, two levels (16, 32)": {"channels": (16, 32), "patch_size": 2, "latent_channels": 8},
    "16^3 x 8, stride-4 stem (32)": {"channels": (32,), "patch_size": 4, "latent_channels": 8},
}


def _rows(name: str, restorer, d: dict, lesioned, masks, head) -> dict:
    """One restorer's row: both maps from one set of its restorations."""
    restored = dev_restorations(restorer, d, lesioned)
    plain = restorer_row(name, restorer, d, lesioned, masks, None, restored)
    product = restorer_row(name, restorer, d, lesioned, masks, head, restored)
    keys = ("voxel_auprc", "best_dice", "volume_auroc", "flagged", "healthy_flagged")
    return {**{k: v for k, v in plain.items() if k not in keys}, "normalised": {k: plain[k] for k in keys},
            "product": {k: product[k] for k in keys},
            "params": sum(p.numel() for p in restorer.parameters())}


def run(minutes: float, n: int = 96, only: list[str] | None = None) -> dict:
    from vae3d.config import ModelConfig

    d, lesioned, masks, head, shipped = restorer_bench_inputs(n)
    rows = [{**_rows("shipped restorer (another cohort)", shipped, d, lesioned, masks, head),
             "epochs": None}]
    print(rows[-1], flush=True)
    for i, (name, arch) in enumerate(ROWS.items()):
        if only and name not in only:
            continue
        model, result, seconds = trained_restorer(d["train"], d["val"], minutes, Path(f"/tmp/vae3d-capacity/{i}"),
                                                  model=ModelConfig(**arch))
        rows.append({**_rows(name, model, d, lesioned, masks, head), **trained_fields(result, seconds),
                     "architecture": arch})
        print(rows[-1], flush=True)
    return restorer_bench_result(minutes, n, d, lesioned, rows)


def _built(path: Path | None) -> dict:
    """A restorer file's build, from its own description: epochs, seconds and, for a continuation, the command."""
    from vae3d.pretrained import describe

    info = describe("anomaly", path)
    epochs = info["train"]["epochs"]
    command = (f"python -m vae3d.pretrained.build --which anomaly --epochs {epochs} --from-shipped"
               + (f" --out {path}" if path else "") if "continued_from" in info else None)
    return {"epochs": epochs, "val_ssim": None, "command": command, "built_in_s": info.get("built_in_s")}


def candidate(path: Path, label: str, n: int = 96) -> list[dict]:
    """The shipped restorer's row and the candidate restorer's in ``path``, on the same data (no training)."""
    d, lesioned, masks, head, shipped = restorer_bench_inputs(n)
    rows = []
    for name, restorer, file in (("shipped restorer", shipped, None),
                                 (label, anomaly_restorer(d["train"].shape[-1], path), path)):
        rows.append({**_rows(name, restorer, d, lesioned, masks, head), **_built(file)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def store(row: dict) -> Path:
    """``row`` added to the stored result after its last untrained row (the shipped restorer's continuations)."""
    path = RESULTS / "anomaly_restorer_capacity.json"
    result = json.loads(path.read_text())
    at = max(i for i, r in enumerate(result["rows"]) if "architecture" not in r) + 1
    result["rows"].insert(at, row)
    path.write_text(json.dumps(result, indent=1, default=str))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=12.0, help="training budget per architecture, from scratch")
    ap.add_argument("--only", nargs="*", default=None, help="row names to train (default: all)")
    ap.add_argument("--candidate", type=Path, help="a restorer file to measure against the shipped one (no training)")
    ap.add_argument("--label", default="candidate restorer", help="the candidate's row name")
    ap.add_argument("--store", action="store_true", help="add the candidate's row to the stored result")
    a = ap.parse_args()
    if a.candidate is None:
        print(write_result("anomaly_restorer_capacity", run(a.minutes, only=a.only)))
    elif a.store:
        print(store(candidate(a.candidate, a.label)[-1]))
    else:
        candidate(a.candidate, a.label)


if __name__ == "__main__":
    main()
