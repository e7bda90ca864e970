"""Synthetic lesions inserted into real anatomy (no real lesion data ships offline)."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter


def insert_lesions(
    image: np.ndarray,
    where: np.ndarray,
    rng: np.random.Generator,
    n_range: tuple[int, int] = (1, 3),
    radius_range: tuple[float, float] = (2.0, 6.0),
    contrast_range: tuple[float, float] = (0.35, 0.8),
    polarity: str = "both",
    irregular: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Add hyper- or hypo-intense lesions centred inside ``where``: ellipsoids, or with
    ``irregular`` > 0 ellipsoids whose boundary a smooth random field pushes in and out.

    Args:
        image: (X, Y, Z) intensities; not modified.
        where: (X, Y, Z) bool mask of allowed lesion centres (e.g. white matter).
        rng: the caller's seeded generator: every sampled parameter is returned.
        radius_range: semi-axis lengths in voxels.
        contrast_range: relative intensity change.
        polarity: ``hyper``, ``hypo`` or ``both`` (the sign is drawn per lesion).
        irregular: how far the boundary departs from the ellipsoid, as a fraction of its radius
            (0: an ellipsoid; 0.6: lobed, elongated shapes like MS plaques or small infarcts).

    Returns:
        (image with lesions, uint8 mask, list of the sampled parameters per lesion)
    """
    out = image.astype(np.float32, copy=True)
    mask = np.zeros(image.shape, dtype=np.uint8)
    candidates = np.argwhere(where)
    if len(candidates) == 0:
        raise ValueError("no voxel is allowed to hold a lesion: 'where' is empty")
    grid = np.indices(image.shape, dtype=np.float32)
    ref = float(np.percentile(image[where], 50))
    records = []
    for _ in range(int(rng.integers(n_range[0], n_range[1] + 1))):
        centre = candidates[rng.integers(len(candidates))].astype(np.float32)
        radii = rng.uniform(*radius_range, size=3).astype(np.float32)
        if polarity not in ("both", "hyper", "hypo"):
            raise ValueError(f"polarity must be 'both', 'hyper' or 'hypo', got {polarity!r}")
        draw = rng.random()
        sign = {"hyper": 1.0, "hypo": -1.0}.get(polarity, 1.0 if draw < 0.5 else -1.0)
        contrast = float(sign * rng.uniform(*contrast_range))
        d2 = sum(((grid[i] - centre[i]) / radii[i]) ** 2 for i in range(3))
        if irregular > 0:  # a smooth field (a few voxels' correlation) moves the boundary
            field = gaussian_filter(rng.standard_normal(image.shape).astype(np.float32), sigma=float(radii.mean()) / 2)
            field /= max(float(field.std()), 1e-6)
            d2 = d2 * (1.0 + irregular * field).clip(0.2, None) ** -2
        inside = d2 <= 1.0
        # soft edge: full contrast in the core, fading over the outer 30%
        weight = np.clip((1.0 - d2) / 0.3, 0.0, 1.0)
        out += weight * contrast * ref
        mask[inside] = 1
        records.append({"centre": centre.tolist(), "radii": radii.tolist(), "contrast": contrast,
                        "irregular": irregular})
    np.maximum(out, 0.0, out=out)
    return out, mask, records
