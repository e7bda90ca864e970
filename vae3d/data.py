"""Load preprocessed volumes (verified against the dataset index) into one tensor."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from vae3d.preprocessing.cache import PreprocessCache


class StaleCacheError(RuntimeError):
    """A cached tensor is missing or no longer matches the dataset index."""


def load_volumes(entries: Sequence[tuple[str, str]]) -> torch.Tensor:
    """Stack cached volumes given (cache_path, expected digest) pairs: (N, 1, D, H, W).

    Raises:
        StaleCacheError: an entry is missing, damaged, or differs from the index
            (re-run ``vae3d preprocess``).
    """
    arrays = []
    for cache_path, digest in entries:
        path = Path(cache_path)
        item = PreprocessCache(path.parent).load(path.stem)
        if item is None or item.digest() != digest:
            raise StaleCacheError(
                f"{path} is missing, damaged or out of date with dataset_index.json; "
                "run 'vae3d preprocess' again"
            )
        arrays.append(item.image)
    if not arrays:
        return torch.empty(0)
    return torch.from_numpy(np.stack(arrays).astype(np.float32, copy=False))
