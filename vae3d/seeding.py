"""The one way a random stream gets its seed: ``derive_seed(seed, *keys)``.

A run has one seed (the request's or the training config's); each random step draws from
a stream keyed by what it is for and where it is (``derive_seed(seed, "augment", epoch,
index)``), never from a shared stream, so a step's randomness does not depend on what ran
before it, and a resumed or partial run draws the same numbers as a whole one.
"""

from __future__ import annotations

import zlib

import torch

_MULTIPLIER = 1_000_003  # prime: distinct short integer keys give distinct seeds
_MODULUS = 2**63 - 1  # fits torch.Generator, numpy's default_rng; MONAI reduces it mod 2^32 itself


def derive_seed(seed: int, *keys: int | str) -> int:
    """The seed of the stream named by ``keys`` under ``seed``: a polynomial hash of the keys
    (a string key counts as its CRC-32), in [0, 2^63 - 1).

    ``derive_seed(seed, index)`` is the stream of output ``index`` of a generation request; it is
    the formula every earlier output was drawn with, so outputs stay byte-identical.
    """
    h = int(seed)
    for key in keys:
        k = zlib.crc32(key.encode()) if isinstance(key, str) else int(key)
        h = (h * _MULTIPLIER + k) % _MODULUS
    return h % _MODULUS


def output_generator(seed: int, index: int) -> torch.Generator:
    """The CPU random stream of output ``index`` of a request with ``seed``: prior samples and
    augment variants draw from it, on the CPU whatever the model's device."""
    return torch.Generator().manual_seed(derive_seed(seed, index))
