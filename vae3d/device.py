"""Which torch device a model runs on: one name in the settings, checked early, resolved once.

``"auto"`` is the first CUDA GPU when torch can see one, else the CPU. A name torch does
not know fails when the settings are built; a GPU that is not there fails when the model
is placed, with the fix in the message.
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import AfterValidator, Field

DEVICE_HELP = "'auto' (a CUDA GPU when one is visible, else the CPU), 'cpu', 'cuda' or 'cuda:N'"


def check_device_name(name: str) -> str:
    """``name`` if it is ``auto`` or a device torch can parse; for settings validators."""
    if name == "auto":
        return name
    try:
        torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"device {name!r} is not a torch device; use {DEVICE_HELP}") from None
    return name


# a settings field holding a device name, checked when the settings are built
DeviceName = Annotated[str, AfterValidator(check_device_name), Field(description=DEVICE_HELP)]


def resolve_device(name: str) -> torch.device:
    """The device for a setting: ``auto`` picks CUDA when available.

    Raises:
        RuntimeError: a CUDA device is named but torch sees none (a CPU-only torch build,
            or no GPU/driver visible to this process).
    """
    if check_device_name(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise RuntimeError(
                f"device {name!r}: torch sees {count} CUDA GPU(s) (torch {torch.__version__}); install "
                "the CUDA build of torch (README, 'GPU'), check CUDA_VISIBLE_DEVICES, or set the device to 'cpu'"
            )
    return device
