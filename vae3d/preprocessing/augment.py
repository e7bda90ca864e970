"""Seeded training augmentation: MONAI random transforms on preprocessed tensors.

Each call takes its own seed (derived from the run seed, epoch and sample index by the
trainer), so an augmented batch can be replayed exactly, including after a resume.
"""

from __future__ import annotations

import math

import torch
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    RandAdjustContrast,
    RandAffine,
    RandBiasField,
    RandGaussianNoise,
    RandGibbsNoise,
    RandRicianNoise,
)


def build_augment(prob: float = 0.5, strength: float = 1.0, artifacts: bool = True) -> Compose:
    """MRI-plausible augmentations; ``prob`` per transform, ``strength`` scales magnitudes.

    With ``artifacts=False`` only the anatomy-preserving ones (affine, contrast): training
    applies those to input and target alike and leaves acquisition artifacts (bias, ringing,
    noise) to ``vae3d.corruption``, which corrupts the input alone.

    Input and output: a (1, D, H, W) float tensor in [0, 1].
    """
    s = float(strength)
    affine = RandAffine(
        prob=prob, rotate_range=(math.radians(8 * s),) * 3, scale_range=(0.06 * s,) * 3,
        translate_range=(2 * s,) * 3, padding_mode="zeros", mode="bilinear",
    )
    contrast = RandAdjustContrast(prob=prob, gamma=(1 - 0.3 * s, 1 + 0.3 * s))
    if not artifacts:
        return Compose([affine, contrast])
    return Compose(
        [
            affine,
            RandBiasField(prob=prob, degree=3, coeff_range=(0.0, 0.15 * s)),
            contrast,
            RandGibbsNoise(prob=prob * 0.5, alpha=(0.0, 0.4 * s)),
            RandRicianNoise(prob=prob * 0.5, std=0.02 * s, sample_std=True),
            RandGaussianNoise(prob=prob * 0.5, std=0.02 * s),
        ]
    )


def augment(chain: Compose, x: torch.Tensor, seed: int) -> torch.Tensor:
    """Apply ``chain`` to one (1, D, H, W) tensor with a fixed seed; values clipped to [0, 1]."""
    chain.set_random_state(seed=int(seed) % (2**32))
    return plain(chain(x)).clamp_(0.0, 1.0).float()


def plain(t) -> torch.Tensor:
    """A plain tensor: MONAI transforms return MetaTensors, whose ``__torch_function__``
    hook on every op made a training step about 3x slower (BENCHMARKS.md)."""
    return t.as_tensor() if isinstance(t, MetaTensor) else torch.as_tensor(t)
