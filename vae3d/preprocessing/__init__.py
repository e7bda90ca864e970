"""Preprocessing: MONAI transforms to a fixed grid, a verified on-disk cache, the inverse
mapping back to each scan's own grid, and the seeded training augmentations."""

from vae3d.preprocessing.augment import build_augment
from vae3d.preprocessing.cache import CachedVolume, PreprocessCache
from vae3d.preprocessing.inverse import template_affine, to_original_space
from vae3d.preprocessing.transforms import build_preprocess, preprocess_volume

__all__ = [
    "CachedVolume",
    "PreprocessCache",
    "build_augment",
    "build_preprocess",
    "preprocess_volume",
    "template_affine",
    "to_original_space",
]
