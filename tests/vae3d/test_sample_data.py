import numpy as np
import pytest

from vae3d.sample_data import CohortSpec, insert_lesions, phantom, write_cohort
from vae3d.validate import inspect_volume


def test_phantom_is_seeded_and_varies_with_seed():
    a, aff, _ = phantom((20, 20, 20), seed=3)
    b, _, _ = phantom((20, 20, 20), seed=3)
    c, _, _ = phantom((20, 20, 20), seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.dtype == np.float32 and aff.shape == (4, 4)


def test_phantom_lesions_have_masks_and_change_intensity():
    clean, _, m0 = phantom((32, 32, 32), seed=1, noise=0.0)
    les, _, mask = phantom((32, 32, 32), seed=1, lesions=True, noise=0.0)
    assert m0.sum() == 0 and mask.sum() > 0
    assert np.abs(les - clean)[mask > 0].mean() > 0.1


def test_cohort_same_seed_same_bytes(tmp_path):
    spec = CohortSpec(n=2, seed=5, spacing_mm=4.0, lesion_fraction=1.0)
    a = write_cohort(tmp_path / "a", spec)
    b = write_cohort(tmp_path / "b", spec)
    for pa, pb in zip(a, b, strict=True):
        assert pa.read_bytes() == pb.read_bytes()
    assert (tmp_path / "a" / "participants.tsv").read_text() == (tmp_path / "b" / "participants.tsv").read_text()
    masks = sorted((tmp_path / "a" / "derivatives" / "lesions").rglob("*.nii.gz"))
    assert len(masks) == 2
    h = inspect_volume(a[0])
    assert h.spacing == pytest.approx((4.0, 4.0, 4.0))
    assert h.intensity.p99 > 200  # a real brain, stored as int16 in scanner-like units


def test_cohort_rejects_bad_spec():
    with pytest.raises(ValueError, match="lesion_fraction"):
        CohortSpec(lesion_fraction=2.0)


def test_irregular_lesions_are_seeded_and_depart_from_the_ellipsoid():
    image = np.full((32, 32, 32), 0.6, np.float32)
    where = np.zeros(image.shape, bool)
    where[12:20, 12:20, 12:20] = True
    kw = {"n_range": (1, 1), "radius_range": (4.0, 4.0), "contrast_range": (0.5, 0.5)}
    _, ellipsoid, _ = insert_lesions(image, where, np.random.default_rng(3), **kw)
    a, mask_a, rec = insert_lesions(image, where, np.random.default_rng(3), irregular=0.6, **kw)
    b, mask_b, _ = insert_lesions(image, where, np.random.default_rng(3), irregular=0.6, **kw)
    assert np.array_equal(a, b) and np.array_equal(mask_a, mask_b)
    assert mask_a.sum() > 0 and (mask_a != ellipsoid).sum() > 0.2 * ellipsoid.sum()
    assert rec[0]["irregular"] == 0.6


def test_cohort_is_a_bids_dataset(tmp_path):
    """sub-XXX/anat/ images, participants.tsv keyed by participant_id, a raw dataset_description,
    and label-lesion masks in a derivative dataset beside them."""
    import csv
    import json

    from vae3d.sample_data.cohort import lesion_mask_path

    paths = write_cohort(tmp_path, CohortSpec(n=3, seed=2, spacing_mm=4.0, lesion_fraction=1.0))
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == [
        f"sub-00{i}/anat/sub-00{i}_T1w.nii.gz" for i in (1, 2, 3)]
    rows = list(csv.DictReader((tmp_path / "participants.tsv").open(), delimiter="\t"))
    assert [r["participant_id"] for r in rows] == ["sub-001", "sub-002", "sub-003"]
    assert json.loads((tmp_path / "dataset_description.json").read_text())["DatasetType"] == "raw"
    derived = tmp_path / "derivatives" / "lesions"
    assert json.loads((derived / "dataset_description.json").read_text())["DatasetType"] == "derivative"
    assert lesion_mask_path(paths[0]) == derived / "sub-001" / "anat" / "sub-001_label-lesion_mask.nii.gz"
    assert all(lesion_mask_path(p).is_file() for p in paths)
