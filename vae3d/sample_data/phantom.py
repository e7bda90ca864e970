"""A pure-numpy procedural head phantom for tests that must not need package data."""

from __future__ import annotations

import numpy as np

from vae3d.sample_data.lesions import insert_lesions


def _ellipsoid(grid: np.ndarray, centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
    return (((grid - centre[:, None, None, None]) / radii[:, None, None, None]) ** 2).sum(0) <= 1.0


def phantom(
    shape: tuple[int, int, int] = (32, 32, 32),
    spacing: float = 6.0,
    seed: int = 0,
    lesions: bool = False,
    noise: float = 0.02,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A T1-like head: scalp, skull, CSF, grey and white matter, two ventricles.

    Args:
        shape: voxels per axis.
        spacing: isotropic voxel size in mm (the affine is RAS, centred on the origin).
        seed: sizes, position, contrasts and noise all vary with the seed.
        lesions: insert 1-3 synthetic lesions into white matter.
        noise: Gaussian noise std relative to white-matter intensity.

    Returns:
        (image float32 (X, Y, Z), affine (4, 4), lesion mask uint8 (X, Y, Z))
    """
    rng = np.random.default_rng(seed)
    dims = np.asarray(shape, dtype=np.float32)
    grid = np.indices(shape, dtype=np.float32)
    centre = dims / 2 + rng.uniform(-0.04, 0.04, 3) * dims
    head_r = dims * rng.uniform(0.40, 0.45, 3)
    image = np.zeros(shape, dtype=np.float32)
    wm_level = rng.uniform(0.9, 1.1)
    layers = [  # (relative radius, intensity)
        (1.00, rng.uniform(0.35, 0.45)),  # scalp
        (0.92, rng.uniform(0.05, 0.12)),  # skull
        (0.85, rng.uniform(0.15, 0.25)),  # CSF
        (0.80, rng.uniform(0.55, 0.65)),  # grey matter
        (0.62 * rng.uniform(0.9, 1.1), wm_level),  # white matter
    ]
    for rel, level in layers:
        image[_ellipsoid(grid, centre, head_r * rel)] = level
    for side in (-1, 1):  # lateral ventricles
        v_centre = centre + np.array([side * 0.12, 0.05, 0.05]) * dims
        image[_ellipsoid(grid, v_centre, head_r * np.array([0.10, 0.30, 0.15]))] = layers[2][1]
    mask = np.zeros(shape, dtype=np.uint8)
    if lesions:
        wm = np.isclose(image, wm_level)
        image, mask, _ = insert_lesions(image, wm, rng, radius_range=(1.5, max(2.0, shape[0] / 10)))
    image = image + rng.normal(0.0, noise * wm_level, shape).astype(np.float32)
    image = np.clip(image, 0.0, None).astype(np.float32)
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = -spacing * (dims - 1) / 2
    return image, affine, mask
