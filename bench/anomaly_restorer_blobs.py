"""Does a restorer trained to remove lesion-like blobs give back less of a lesion (#19)? Side by side
on the development data of ``bench.anomaly_ablation`` (the seed-0 cohort: 56 train / 16 healthy
reference / 24 held out; the test split is never used).

'Anomaly detection: the volume score' bounds the product's map: restored as their healthy scans
were, lesioned copies reach AUROC 0.993 against 0.948, so the restorer giving back part of each
lesion is what holds the map back. The restorer learns from coarse noise (Gaussian on a lattice,
Kascenas et al. 2022); a lesion is a local blob with a border. Each row fine-tunes the shipped
restorer for the same wall clock on the training scans:

- ``coarse``: its own mix (the control);
- ``blobs``: the same, then on half the inputs 1-3 blobs of the anomaly head's generator
  (``vae3d.anomaly_head.synthetic_anomalies``: a textured brighter or darker change, a flat level,
  or a shifted patch of the scan itself), which the restorer must remove too. The benchmark's
  lesions come from another generator (``vae3d.sample_data.lesions``).

The shipped restorer without fine-tuning is the first row. Every map is the product's
(``vae3d.anomaly``: the shipped head, statistics and envelope calibrated leave-one-out on the 16
reference scans, mirror-averaged restoration, the drift put back). The 24 held-out scans are
lesioned three times (seeds 1, 2, 3: 72 copies). Columns: training epochs, the share of a lesion the
restoration gives back, the healthy held-out scans' mean absolute restoration error, voxel AUPRC /
best Dice / volume AUROC (24 healthy against 72 lesioned), and the shares of lesioned / healthy
scans flagged at the calibrated threshold.

    python -m bench.anomaly_restorer_blobs --minutes 9
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from bench.common import (
    fine_tuned_restorer,
    restorer_bench_inputs,
    restorer_bench_result,
    restorer_row,
    trained_fields,
    write_result,
)

BLOB_SHARE = 0.5  # of training inputs that also carry synthetic blobs


def _blobs(x: torch.Tensor, cfg, seed: int) -> torch.Tensor:
    """``corrupt``, then on ``BLOB_SHARE`` of inputs the anomaly head's synthetic blobs."""
    from vae3d.anomaly_head import synthetic_anomalies
    from vae3d.corruption import corrupt

    out = corrupt(x, cfg, seed)
    rng = np.random.default_rng(int(seed) % (2**63) + 13)
    if rng.random() >= BLOB_SHARE:
        return out
    image, _ = synthetic_anomalies(out[0].numpy(), x[0].numpy(), rng)
    return torch.from_numpy(image)[None]


def run(minutes: float, n: int = 96) -> dict:
    from vae3d.corruption import corrupt

    d, lesioned, masks, head, shipped = restorer_bench_inputs(n)
    rows = [{**restorer_row("shipped restorer, no fine-tuning", shipped, d, lesioned, masks, head), "epochs": 0}]
    print(rows[-1], flush=True)
    for name, corruption in (("coarse (control)", corrupt), ("coarse + blobs", _blobs)):
        model, result, seconds = fine_tuned_restorer(corruption, d["train"], d["val"], minutes,
                                                     Path(f"/tmp/vae3d-restorer-blobs/{name.split()[0]}"))
        rows.append({**restorer_row(name, model, d, lesioned, masks, head), **trained_fields(result, seconds)})
        print(rows[-1], flush=True)
    return restorer_bench_result(minutes, n, d, lesioned, rows, blob_share=BLOB_SHARE)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=9.0, help="fine-tuning budget per row")
    a = ap.parse_args()
    print(write_result("anomaly_restorer_blobs", run(a.minutes)))


if __name__ == "__main__":
    main()
