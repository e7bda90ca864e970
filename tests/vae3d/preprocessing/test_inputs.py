"""A user's scan prepared for the model: intensity round trip and the super-resolution grid."""

from __future__ import annotations

import nibabel as nib
import numpy as np
from scipy.spatial.transform import Rotation

from vae3d import nifti
from vae3d.preprocessing import build_preprocess, to_original_space
from vae3d.preprocessing.inputs import prepare_input, super_resolution_grid, to_input_scale
from vae3d.sample_data import phantom

SMALL = {"target_shape": (24, 24, 24), "target_spacing": (6.0, 6.0, 6.0)}


def _oblique_anisotropic(path, spacing=(4.0, 4.0, 10.0), shape=(36, 36, 14), scale=800.0):
    image, _, _ = phantom(shape, spacing=4.0, seed=3, noise=0.01)
    rot = np.eye(4)
    rot[:3, :3] = Rotation.from_euler("zyx", [12, -5, 8], degrees=True).as_matrix()
    aff = np.diag([*spacing, 1.0])
    aff[:3, 3] = [-70.0, -80.0, -60.0]
    aff = rot @ aff
    nifti.save_volume(path, (image * scale).astype(np.float32), aff)
    return path, aff


def test_intensity_round_trip_back_to_the_inputs_scale(tmp_path):
    path, _ = _oblique_anisotropic(tmp_path / "scan.nii.gz", spacing=(4.0, 4.0, 4.0), shape=(30, 30, 30))
    prep = prepare_input(path, build_preprocess(**SMALL))
    lo, hi = prep.intensity_range
    raw = nib.load(path).get_fdata()
    assert 0 <= lo < hi <= raw.max() + 1e-3 and hi > 100  # the input's own units, not [0, 1]
    back = to_input_scale(prep.x[0, 0].numpy(), prep.intensity_range)
    # unclipped voxels come back exactly to the resampled input's values
    unit = prep.x[0, 0].numpy()
    inside = (unit > 0.01) & (unit < 0.99)
    np.testing.assert_allclose(back[inside], lo + unit[inside] * (hi - lo), rtol=1e-5)
    # and the whole chain, mapped back onto the input's grid, is close to the input itself
    on_grid = to_input_scale(to_original_space(prep.x[0].numpy(), prep.affine, prep.original_affine,
                                               prep.original_shape), prep.intensity_range)
    brain = raw > 0.5 * raw.max()
    rel = np.abs(on_grid[brain] - raw[brain]).mean() / raw[brain].mean()
    assert rel < 0.15, rel
    assert to_input_scale(np.zeros(3), (5.0, 9.0)).tolist() == [5.0, 5.0, 5.0]


def test_super_resolution_grid_of_an_oblique_anisotropic_input(tmp_path):
    _path, aff = _oblique_anisotropic(tmp_path / "thick.nii.gz")
    shape = (36, 36, 14)
    # factor 2: (4, 4, 10) mm -> (2, 2, 5) mm, but never finer than the model's 3 mm
    new_aff, new_shape = super_resolution_grid(aff, shape, (3.0, 3.0, 3.0), factor=2)
    np.testing.assert_allclose(nib.affines.voxel_sizes(new_aff), [3.0, 3.0, 5.0], atol=1e-6)
    assert new_shape == (48, 48, 28)
    # same orientation: the direction cosines are unchanged
    np.testing.assert_allclose(new_aff[:3, :3] / nib.affines.voxel_sizes(new_aff),
                               aff[:3, :3] / nib.affines.voxel_sizes(aff), atol=1e-9)
    # same field of view: the centre of the volume lands on the same world point
    centre = lambda a, s: a[:3, :3] @ ((np.asarray(s) - 1) / 2) + a[:3, 3]
    np.testing.assert_allclose(centre(new_aff, new_shape), centre(aff, shape), atol=1e-6)
    # default: the model's spacing on every axis
    a3, s3 = super_resolution_grid(aff, shape, (3.0, 3.0, 3.0))
    np.testing.assert_allclose(nib.affines.voxel_sizes(a3), [3.0, 3.0, 3.0], atol=1e-6)
    assert s3 == (48, 48, 47)
    # an input already finer than the model keeps its voxels
    a1, s1 = super_resolution_grid(np.diag([1.0, 1.0, 1.0, 1.0]), (20, 20, 20), (3.0, 3.0, 3.0), factor=2)
    np.testing.assert_allclose(nib.affines.voxel_sizes(a1), [1.0, 1.0, 1.0])
    assert s1 == (20, 20, 20)
