"""Anatomy measures of a decoded volume and the direction table, on phantoms built for the test."""

from __future__ import annotations

import numpy as np
import pytest

from vae3d.evaluation.anatomy import anatomy, direction_table

S = 48


def _phantom(ventricle_radius: float, brain_radius: float = 18.0) -> np.ndarray:
    """A ball of white matter (0.85) with a grey-matter rim (0.55, 3 voxels) and a dark central
    ventricle (0.2), in a dark background."""
    r = np.linalg.norm(np.indices((S, S, S), dtype=np.float32) - (S - 1) / 2, axis=0)
    v = np.zeros((S, S, S), np.float32)
    v[r <= brain_radius] = 0.55
    v[r <= brain_radius - 3] = 0.85
    v[r <= ventricle_radius] = 0.2
    return v


def test_anatomy_measures_a_phantoms_brain_ventricles_and_tissue_ratio():
    m = anatomy(_phantom(5.0), voxel_ml=0.001)
    ball = lambda radius: 4 / 3 * np.pi * radius**3 * 0.001
    assert m["brain_ml"] == pytest.approx(ball(18.0), rel=0.05)  # the dark ventricle inside is filled
    assert m["ventricles_ml"] == pytest.approx(ball(5.0), rel=0.15)
    assert m["gm_wm_ratio"] == pytest.approx((ball(18) - ball(15)) / (ball(15) - ball(5)), rel=0.1)
    # the dark rim of background outside the brain is not a ventricle
    assert anatomy(_phantom(0.0), 0.001)["ventricles_ml"] == 0.0


def test_the_direction_table_finds_what_a_direction_changes():
    """Direction 0 grows the ventricles and nothing else; direction 1 the whole brain."""
    amounts = (-2.0, -1.0, 0.0, 1.0, 2.0)
    decoded = {0: {a: _phantom(6.0 + a) for a in amounts}, 1: {a: _phantom(5.0, 16.0 + a) for a in amounts}}
    rows = direction_table(decoded, voxel_ml=0.001)
    assert [r["direction"] for r in rows] == [0, 1]
    assert rows[0]["ventricles_ml_corr"] > 0.95 and rows[0]["ventricles_ml_per_sd"] > 0
    assert rows[0]["brain_ml_corr"] == 0.0  # unchanged: no correlation, not a division by zero
    assert rows[0]["gm_wm_ratio_corr"] > 0.9  # less white matter for the same grey rim
    assert rows[1]["brain_ml_corr"] > 0.95 and rows[1]["ventricles_ml_per_sd"] == pytest.approx(0.0, abs=1e-9)
