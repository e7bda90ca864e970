"""Preprocessing invariants on real (tiny) NIfTI files."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from nibabel.processing import resample_from_to
from scipy.spatial.transform import Rotation

from vae3d import nifti
from vae3d.preprocessing import build_preprocess, preprocess_volume, to_original_space
from vae3d.preprocessing.augment import augment, build_augment
from vae3d.sample_data import phantom

SMALL = dict(target_shape=(32, 32, 32), target_spacing=(4.0, 4.0, 4.0))


def _reoriented(img: nib.Nifti1Image, codes: str) -> nib.Nifti1Image:
    ornt = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(img.affine), nib.orientations.axcodes2ornt(tuple(codes))
    )
    return img.as_reoriented(ornt)


@pytest.fixture(scope="module")
def anatomy(tmp_path_factory):
    """One phantom head saved as RAS, LAS, LPS and on an oblique (rotated) grid."""
    folder = tmp_path_factory.mktemp("orient")
    image, affine, _ = phantom((48, 48, 48), spacing=3.0, seed=7, noise=0.0)
    ras = nib.Nifti1Image(image, affine)
    paths = {}
    for codes in ("RAS", "LAS", "LPS"):
        img = _reoriented(ras, codes)
        assert "".join(nib.aff2axcodes(img.affine)) == codes
        paths[codes] = nifti.save_volume(folder / f"{codes}.nii.gz", np.asarray(img.dataobj), img.affine)
    rot = np.eye(4)
    rot[:3, :3] = Rotation.from_euler("xyz", [12, -8, 15], degrees=True).as_matrix()
    oblique_affine = rot @ affine
    oblique = resample_from_to(ras, ((56, 56, 56), oblique_affine @ _shift(-4)), order=1)
    paths["oblique"] = nifti.save_volume(folder / "oblique.nii.gz", oblique.get_fdata(), oblique.affine)
    return paths


def _shift(n: int) -> np.ndarray:
    t = np.eye(4)
    t[:3, 3] = n
    return t


def test_same_anatomy_any_orientation_same_array(anatomy):
    chain = build_preprocess(**SMALL)
    out = {k: preprocess_volume(chain, p) for k, p in anatomy.items()}
    ref, ref_affine = out["RAS"]
    for codes in ("LAS", "LPS"):
        np.testing.assert_allclose(out[codes][0], ref, atol=1e-4)
        np.testing.assert_allclose(out[codes][1], ref_affine, atol=1e-4)
    obl = out["oblique"][0]
    corr = np.corrcoef(obl.ravel(), ref.ravel())[0, 1]
    assert corr > 0.93, f"oblique input differs from RAS beyond interpolation: r={corr:.3f}"
    assert np.abs(obl - ref).mean() < 0.06


@pytest.mark.parametrize(
    "shape,spacing",
    [((17, 23, 31), (1.3, 2.1, 0.9)), ((40, 12, 40), (5.0, 5.0, 2.5)), ((9, 9, 64), (9.0, 9.0, 1.0))],
)
def test_shape_and_range_hold_for_odd_inputs(tmp_path, shape, spacing):
    rng = np.random.default_rng(0)
    data = rng.random(shape, dtype=np.float32) * 500
    affine = np.diag([*spacing, 1.0])
    path = nifti.save_volume(tmp_path / "odd.nii.gz", data, affine)
    image, out_affine = preprocess_volume(build_preprocess(**SMALL), path)
    assert image.shape == (1, 32, 32, 32)
    assert image.dtype == np.float32
    assert image.min() >= 0.0 and image.max() <= 1.0 and image.max() > 0.5
    np.testing.assert_allclose(np.sqrt((out_affine[:3, :3] ** 2).sum(0)), [4.0, 4.0, 4.0], rtol=1e-5)


@pytest.mark.parametrize("codes", ["RAS", "LPS", "oblique"])
def test_inverse_maps_back_onto_the_input_grid(anatomy, codes):
    path = anatomy[codes]
    src = nib.load(path)
    image, affine = preprocess_volume(build_preprocess(**SMALL), path)
    back = to_original_space(image, affine, src.affine, src.shape)
    assert back.shape == src.shape
    orig = src.get_fdata()
    head = orig > 0.3 * orig.max()
    assert np.corrcoef(back[head], orig[head])[0, 1] > 0.85
    # the background stays background
    assert back[orig == 0].mean() < 0.1


def test_augmentation_is_seeded():
    x = torch.from_numpy(phantom((24, 24, 24), seed=1)[0][None] / 1.2).float()
    chain = build_augment(prob=1.0)
    a, b, c = augment(chain, x, 11), augment(chain, x, 11), augment(chain, x, 12)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.shape == x.shape and float(a.min()) >= 0.0 and float(a.max()) <= 1.0
