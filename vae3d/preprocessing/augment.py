"""Seeded training augmentation: MONAI random transforms on preprocessed tensors.

Each call takes its own seed (derived from the run seed, epoch and sample index by the
trainer), so an augmented batch can be replayed exactly, including after a resume.
"""

from __future__ import annotations

import math

import torch
from monai.transforms import (
    Compose,
    RandAdjustContrast,
    RandAffine,
    RandBiasField,
    RandGaussianNoise,
    RandGibbsNoise,
    RandRicianNoise,
)


def build_augment(prob: float = 0.5, strength: float = 1.0) -> Compose:
    """MRI-plausible augmentations; ``prob`` per transform, ``strength`` scales magnitudes.

    Input and output: a (1, D, H, W) float tensor in [0, 1].
    """
    s = float(strength)
    return Compose(
        [
            RandAffine(
                prob=prob, rotate_range=(math.radians(8 * s),) * 3, scale_range=(0.06 * s,) * 3,
                translate_range=(2 * s,) * 3, padding_mode="zeros", mode="bilinear",
            ),
            RandBiasField(prob=prob, degree=3, coeff_range=(0.0, 0.15 * s)),
            RandAdjustContrast(prob=prob, gamma=(1 - 0.3 * s, 1 + 0.3 * s)),
            RandGibbsNoise(prob=prob * 0.5, alpha=(0.0, 0.4 * s)),
            RandRicianNoise(prob=prob * 0.5, std=0.02 * s, sample_std=True),
            RandGaussianNoise(prob=prob * 0.5, std=0.02 * s),
        ]
    )


def augment(chain: Compose, x: torch.Tensor, seed: int) -> torch.Tensor:
    """Apply ``chain`` to one (1, D, H, W) tensor with a fixed seed; values clipped to [0, 1]."""
    chain.set_random_state(seed=int(seed) % (2**32))
    out = chain(x)
    return torch.as_tensor(out).clamp_(0.0, 1.0).float()
