"""Device names: checked when settings are built, resolved with a fix in the error."""

from __future__ import annotations

import pytest
import torch

from vae3d.config import TrainConfig
from vae3d.device import check_device_name, resolve_device


def test_names_torch_knows_pass_and_others_fail_with_the_choices():
    for name in ("auto", "cpu", "cuda", "cuda:1"):
        assert check_device_name(name) == name
    with pytest.raises(ValueError, match="'gpu' is not a torch device; use 'auto'"):
        check_device_name("gpu")
    with pytest.raises(ValueError, match="gpu0' is not a torch device"):
        TrainConfig(device="gpu0")


def test_auto_is_cuda_only_where_torch_sees_a_gpu_and_a_missing_gpu_says_how_to_fix_it():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    missing = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(RuntimeError, match=rf"torch sees {missing} CUDA GPU\(s\).*CUDA build of torch"):
        resolve_device(f"cuda:{missing}")
