"""A cohort of realistic T1 volumes derived from real anatomy (nilearn's MNI152 template).

Each subject is the MNI152 2009a T1 with its tissue contrast varied through the bundled grey
and white matter maps, then a seeded random affine + elastic deformation, a smooth bias
field, Rician noise and (optionally) synthetic lesions, stored in a random one of the
orientations scanners write (RAS, LAS, LPS). Every sampled parameter goes to
``participants.tsv``; the same seed gives the same bytes.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.transforms import Rand3DElastic, RandBiasField, RandRicianNoise
from nibabel.processing import resample_to_output

from vae3d import files, nifti
from vae3d.sample_data.lesions import insert_lesions

_TEMPLATE = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"
ORIENTATIONS = ("RAS", "LAS", "LPS")
BIDS_VERSION = "1.10.0"


@dataclass(frozen=True)
class CohortSpec:
    """What to generate. Every field is a primitive so the spec is its own provenance."""

    n: int = 24
    seed: int = 0
    spacing_mm: float = 2.0
    lesion_fraction: float = 0.0
    orientations: tuple[str, ...] = ORIENTATIONS

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if not 0.5 <= self.spacing_mm <= 8:
            raise ValueError(f"spacing_mm must be in [0.5, 8], got {self.spacing_mm}")
        if not 0 <= self.lesion_fraction <= 1:
            raise ValueError(f"lesion_fraction must be in [0, 1], got {self.lesion_fraction}")


def template_path(kind: str = "t1") -> Path:
    """Path of a bundled MNI152 map (``t1``, ``gm`` or ``wm``) inside the nilearn package."""
    import nilearn

    path = Path(nilearn.__file__).parent / "datasets" / "data" / _TEMPLATE.format(kind)
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: reinstall nilearn (>=0.11 ships the MNI152 maps)")
    return path


@functools.lru_cache(maxsize=4)
def _templates(spacing_mm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    maps = []
    for kind in ("t1", "gm", "wm"):
        img = nib.load(template_path(kind))
        if spacing_mm != 1.0:
            img = resample_to_output(img, voxel_sizes=(spacing_mm,) * 3, order=1)
        maps.append(np.asarray(img.get_fdata(dtype=np.float32)))
        affine = img.affine
    t1, gm, wm = maps
    return t1 / max(float(t1.max()), 1.0), np.clip(gm, 0, 1), np.clip(wm, 0, 1), affine


def _seeded(transform, seed: int):
    transform.set_random_state(seed=seed)
    return transform


def synthesize_subject(spec: CohortSpec, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """One subject: (int16 image, affine, uint8 lesion mask, sampled parameters)."""
    t1, gm, wm, affine = _templates(spec.spacing_mm)
    rng = np.random.default_rng([spec.seed, index])
    seeds = rng.integers(0, 2**31 - 1, size=3)
    params: dict = {"participant_id": f"sub-{index + 1:03d}"}
    # tissue contrast: shift grey and white matter against the template's own contrast
    d_gm, d_wm, gain = rng.normal(0, 0.06), rng.normal(0, 0.06), rng.uniform(0.85, 1.15)
    image = gain * (t1 + d_gm * gm + d_wm * wm) * (t1 > 0)
    params.update(gm_shift=round(float(d_gm), 4), wm_shift=round(float(d_wm), 4), gain=round(float(gain), 4))
    mask = np.zeros(image.shape, dtype=np.uint8)
    lesions: list = []
    if rng.random() < spec.lesion_fraction:
        image, mask, lesions = insert_lesions(
            image, wm > 0.9, rng, radius_range=(3.0 / spec.spacing_mm, 12.0 / spec.spacing_mm)
        )
    params["lesions"] = len(lesions)
    # random affine + elastic deformation, applied to image and mask with the same field
    elastic = _seeded(
        Rand3DElastic(
            sigma_range=(6, 9), magnitude_range=(40 / spec.spacing_mm, 100 / spec.spacing_mm),
            prob=1.0, rotate_range=(0.12, 0.12, 0.12), scale_range=(0.08, 0.08, 0.08),
            translate_range=(4, 4, 4), padding_mode="zeros",
        ),
        int(seeds[0]),
    )
    stacked = torch.from_numpy(np.stack([image, mask.astype(np.float32)]))
    warped = elastic(stacked, mode="bilinear")
    image, mask = warped[0:1], (warped[1].numpy() > 0.5).astype(np.uint8)
    bias = _seeded(RandBiasField(degree=3, coeff_range=(0.05, 0.25), prob=1.0), int(seeds[1]))
    image = bias(image)
    noise_std = float(rng.uniform(0.01, 0.03))
    noise = _seeded(RandRicianNoise(prob=1.0, std=noise_std, sample_std=False), int(seeds[2]))
    image = np.asarray(noise(image))[0]
    params.update(noise_std=round(noise_std, 4), elastic_seed=int(seeds[0]), bias_seed=int(seeds[1]))
    stored = np.clip(np.rint(image * 1000.0), 0, 32767).astype(np.int16)
    orientation = spec.orientations[int(rng.integers(len(spec.orientations)))]
    stored, mask, out_affine = _reorient(stored, mask, affine, orientation)
    params["orientation"] = orientation
    return stored, out_affine, mask, params


def _reorient(image, mask, affine, codes: str):
    img = nib.Nifti1Image(image, affine)
    target = nib.orientations.axcodes2ornt(tuple(codes))
    current = nib.orientations.io_orientation(affine)
    transform = nib.orientations.ornt_transform(current, target)
    out = img.as_reoriented(transform)
    out_mask = nib.orientations.apply_orientation(mask, transform)
    return np.asarray(out.dataobj), np.ascontiguousarray(out_mask), out.affine


def thick_slice_copy(path: Path, out: Path, slice_mm: float = 6.0) -> Path:
    """A thick-slice acquisition of a scan: its slices (last voxel axis) averaged into
    ``slice_mm`` slabs, in-plane voxels unchanged; the demo's super-resolution input."""
    img = nib.load(str(path))
    data = np.asarray(img.get_fdata(dtype=np.float32))
    zooms = nib.affines.voxel_sizes(img.affine)
    k = max(1, round(slice_mm / zooms[2]))
    n = data.shape[2] // k
    slabs = data[:, :, : n * k].reshape(data.shape[0], data.shape[1], n, k).mean(3)
    affine = img.affine.copy()
    affine[:3, 2] *= k
    affine[:3, 3] += img.affine[:3, 2] * (k - 1) / 2  # slab centres
    return nifti.save_volume(Path(out), np.rint(slabs).astype(np.int16), affine, dtype=np.int16)


def write_cohort(
    out: Path, spec: CohortSpec, progress: Callable[[int], None] | None = None
) -> list[Path]:
    """Write ``spec.n`` subjects as a BIDS dataset: ``sub-XXX/anat/sub-XXX_T1w.nii.gz``,
    ``participants.tsv`` (``participant_id`` and every sampled parameter) and
    ``dataset_description.json``; lesion masks as the derivative dataset ``derivatives/lesions``
    (``sub-XXX/anat/sub-XXX_label-lesion_mask.nii.gz``).

    Returns the written image paths.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows, paths, masks = [], [], False
    for i in range(spec.n):
        image, affine, mask, params = synthesize_subject(spec, i)
        sub = params["participant_id"]
        path = out / sub / "anat" / f"{sub}_T1w.nii.gz"
        nifti.save_volume(path, image, affine, dtype=np.int16)
        if params["lesions"]:
            mask_path = out / "derivatives" / "lesions" / sub / "anat" / f"{sub}_label-lesion_mask.nii.gz"
            nifti.save_volume(mask_path, mask, affine, dtype=np.uint8)
            masks = True
        rows.append(params)
        paths.append(path)
        if progress:
            progress(1)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), delimiter="\t", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    files.atomic_write_text(out / "participants.tsv", buf.getvalue())
    description = {"Name": f"vae3d sample cohort (seed {spec.seed}, {spec.n} subjects)", "BIDSVersion": BIDS_VERSION,
                   "DatasetType": "raw", "GeneratedBy": [{"Name": "vae3d sample-data", "Description": json.dumps(
                       dataclasses.asdict(spec))}]}
    files.atomic_write_text(out / "dataset_description.json", json.dumps(description, indent=1))
    if masks:
        derived = {"Name": "synthetic lesion masks", "BIDSVersion": BIDS_VERSION, "DatasetType": "derivative",
                   "GeneratedBy": [{"Name": "vae3d sample-data"}], "SourceDatasets": [{"URL": "../.."}]}
        files.atomic_write_text(out / "derivatives" / "lesions" / "dataset_description.json",
                                json.dumps(derived, indent=1))
    return paths


def lesion_mask_path(image: Path) -> Path:
    """Where ``write_cohort`` put the lesion mask of ``image`` (``sub-XXX/anat/sub-XXX_T1w.nii.gz``)."""
    sub = image.parent.parent.name
    return image.parent.parent.parent / "derivatives" / "lesions" / sub / "anat" / f"{sub}_label-lesion_mask.nii.gz"
