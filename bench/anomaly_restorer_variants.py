"""Anomaly restorers trained on other corruptions, side by side (#19), on the development data of
``bench.anomaly_ablation`` (the seed-0 cohort: 56 train / 16 healthy reference / 24 held out,
lesioned copies of the held-out scans).

Each variant fine-tunes the shipped anomaly restorer (``vae3d/pretrained``, ``"anomaly"``) for the
same wall-clock budget on the restorer's mix (``vae3d.config.COARSE_NOISE``), changed as follows:

- ``coarse``: unchanged (the control: the default restorer, trained longer);
- ``multiscale``: the coarse noise's lattice drawn from 8, 16 or 32 per input, std up to 0.4
  (blobs of a small lesion's size as well as a large one's);
- ``inpaint``: every input also has 8^3 cubes on a lattice of period 16 (a random offset) set to
  0, and the restoration at test time is assembled from the 8 offsets of that lattice, each voxel
  taken from the pass in which it was masked: the model never sees the lesion it restores
  (patch-masked restoration, as in Behrendt et al. 2023's patched diffusion models).

The variants change ``vae3d.training.trainer.corrupt`` for the run only: none of them is the
product's, so they live here rather than in ``vae3d.corruption``. Each map is scored with the
plain residual and the healthy-normalised one at several floors and smoothings:

    python -m bench.anomaly_restorer_variants --minutes 9
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from bench.common import anomaly_dev_data, fine_tuned_restorer, lesion_kept, map_scores, write_result

PERIOD, CUBE = 16, 8  # the inpainting lattice: 8^3 cubes every 16 voxels, 8 offsets cover the volume
FLOORS = (None, 0.035, 0.05, 0.07)  # None: the plain residual
SIGMAS = (1.0, 1.5)
TOP_FRACTION = 0.0005  # each scan's score: the product's when these rows were made


def lattice_mask(shape, offset) -> torch.Tensor:
    """(D, H, W) bool: the cubes of the inpainting lattice at ``offset``."""
    idx = [((torch.arange(s) - o) % PERIOD) < CUBE for s, o in zip(shape, offset, strict=True)]
    return idx[0][:, None, None] & idx[1][None, :, None] & idx[2][None, None, :]


def _variants() -> dict:
    from vae3d.corruption import corrupt

    def multiscale(x, cfg, seed):
        grid = int(np.random.default_rng(int(seed) % (2**63) + 11).choice([8, 16, 32]))
        return corrupt(x, cfg.model_copy(update={"coarse_grid": grid, "coarse_std": 0.4}), seed)

    def inpaint(x, cfg, seed):
        out = corrupt(x, cfg, seed)
        out[:, lattice_mask(out.shape[1:], np.random.default_rng(int(seed) % (2**63) + 7).integers(0, PERIOD, 3))] = 0
        return out

    return {"coarse": corrupt, "multiscale": multiscale, "inpaint": inpaint}


@torch.no_grad()
def inpainted(model, x: torch.Tensor) -> torch.Tensor:
    """Each voxel restored by the pass that masked it (8 passes)."""
    from vae3d.inference import reconstruct_all

    out = torch.zeros_like(x)
    for off in np.ndindex(2, 2, 2):
        m = lattice_mask(x.shape[2:], [o * CUBE for o in off])
        xm = x.clone()
        xm[:, :, m] = 0.0
        out[:, :, m] = reconstruct_all(model, xm)[:, :, m]
    return out


def _maps(val, held, lesioned, masks, rv, rh, rl) -> dict:
    from vae3d import anomaly

    out = {}
    for sigma in SIGMAS:
        for floor in FLOORS:
            stats = None if floor is None else anomaly.fit_healthy(val, rv, std_floor=floor)
            m_les = anomaly.anomaly_map(lesioned, rl, stats, sigma=sigma)
            m_h = anomaly.anomaly_map(held, rh, stats, sigma=sigma)
            scores = map_scores(m_h, m_les, masks, (TOP_FRACTION,))
            out[f"sigma {sigma}, floor {floor}"] = {**scores, "volume_auroc": scores["volume_auroc"][str(TOP_FRACTION)]}
    return out


def run(minutes: float, only: list[str], n: int = 96) -> dict:
    from vae3d.inference import reconstruct_all

    d = anomaly_dev_data(n)
    train, val, held, lesioned, masks = d["train"], d["val"], d["held"], d["lesioned"], d["masks"]
    rows = []
    for name, corruption in _variants().items():
        if name not in only:
            continue
        # the last weights: the val SSIM of a plain reconstruction does not judge an inpainter
        model, result, seconds = fine_tuned_restorer(corruption, train, val, minutes,
                                                     Path(f"/tmp/vae3d-restorer-variants/{name}"))

        def restore(x, model=model, name=name):
            return inpainted(model, x) if name == "inpaint" else reconstruct_all(model, x)

        rv, rh, rl = (restore(v) for v in (val, held, lesioned))
        rows.append({"variant": name, "epochs": result.epochs_run, "train_s": seconds,
                     "val_ssim": result.best_metrics.get("val_ssim"),
                     "lesion_kept": lesion_kept(held, lesioned, rl, masks),
                     "maps": _maps(val, held, lesioned, masks, rv, rh, rl)})
        print(rows[-1], flush=True)
    return {"minutes": minutes, "n": n, "split": [len(train), len(val), len(held)], "lesions": d["lesions"],
            "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=9.0, help="fine-tuning budget per variant")
    ap.add_argument("--only", default="coarse,multiscale,inpaint", help="comma-separated variants to run")
    ap.add_argument("--name", default="anomaly_restorer_variants", help="results file (bench/results/NAME.json)")
    a = ap.parse_args()
    print(write_result(a.name, run(a.minutes, a.only.split(","))))


if __name__ == "__main__":
    main()
