"""Measurable anatomy of a decoded volume, and what each of the prior's principal directions
changes in it (#18's interpretability table).

The measures are intensity-based, on a T1-weighted volume scaled to [0, 1] (the model's
output): the brain is the filled head above the CSF floor, the ventricles are the dark voxels
deep inside it (the brain eroded by a tenth of the grid, so the sulci at its surface are left
out), and grey and white matter are the tissue bands of ``vae3d.evaluation.synthesis``.
Crude, but the same rule on every volume: what matters is how they move along a direction.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage

from vae3d.evaluation.synthesis import TISSUE_BANDS

BRAIN_FLOOR = 0.1  # as ``synthesis.brain_values``
PROPERTIES = ("brain_ml", "ventricles_ml", "gm_wm_ratio")


def anatomy(volume: np.ndarray, voxel_ml: float) -> dict[str, float]:
    """``brain_ml``, ``ventricles_ml`` and ``gm_wm_ratio`` of one (D, H, W) volume in [0, 1] whose
    voxels hold ``voxel_ml`` millilitres each."""
    v = np.asarray(volume, dtype=np.float32)
    brain = ndimage.binary_fill_holes(ndimage.binary_closing(v > BRAIN_FLOOR, iterations=2))
    core = ndimage.binary_erosion(brain, iterations=max(1, min(v.shape) // 10))
    ventricles = core & (v < TISSUE_BANDS["csf_like"][1])
    gm = brain & (v >= TISSUE_BANDS["gm_like"][0]) & (v < TISSUE_BANDS["gm_like"][1])
    wm = brain & (v >= TISSUE_BANDS["wm_like"][0])
    return {"brain_ml": float(brain.sum()) * voxel_ml, "ventricles_ml": float(ventricles.sum()) * voxel_ml,
            "gm_wm_ratio": float(gm.sum()) / max(float(wm.sum()), 1.0)}


def direction_table(decoded: dict[int, dict[float, np.ndarray]], voxel_ml: float) -> list[dict]:
    """For each direction ``k`` of ``decoded[k][amount]`` (volumes decoded at ``amount`` standard
    deviations along it): each property's Pearson correlation with the amount, its change per
    standard deviation (least squares) and its range."""
    rows = []
    for k, volumes in decoded.items():
        amounts = np.array(sorted(volumes), dtype=np.float64)
        measured = [anatomy(volumes[a], voxel_ml) for a in amounts]
        row: dict = {"direction": k}
        for p in PROPERTIES:
            values = np.array([m[p] for m in measured])
            flat = values.std() == 0
            row[f"{p}_corr"] = 0.0 if flat else float(np.corrcoef(amounts, values)[0, 1])
            row[f"{p}_per_sd"] = float(np.polyfit(amounts, values, 1)[0])
            row[f"{p}_at_0"] = float(values[np.argmin(np.abs(amounts))])
        rows.append(row)
    return rows


@torch.no_grad()
def prior_directions(model, prior, voxel_ml: float, directions: int = 8,
                     amounts: Sequence[float] = (-2, -1, 0, 1, 2)) -> list[dict]:
    """``direction_table`` for the leading ``directions`` principal directions of a low-rank prior
    (``prior.direction``), each rendered as its samples are at ``amounts``."""
    from vae3d.inference import render

    p = next(model.parameters())
    decoded = {}
    for k in range(min(directions, prior.rank)):
        z = torch.cat([prior.direction(k, a) for a in amounts]).to(p.device, p.dtype)
        vols = render(model, z, prior).clamp(0, 1)[:, 0].float().cpu().numpy()
        decoded[k] = dict(zip(amounts, vols, strict=True))
    return direction_table(decoded, voxel_ml)
