"""Output volumes with their provenance sidecars, written atomically, checked on re-runs."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from data_contracts import PipelineError
from data_contracts.generation import OutputRecord, Provenance
from vae3d import io


def sidecar_path(output: Path) -> Path:
    name = output.name
    for suffix in (".nii.gz", ".parquet", ".png", ".nii"):
        if name.endswith(suffix):
            return output.with_name(name[: -len(suffix)] + ".json")
    return output.with_name(name + ".json")


def answers(prov: Provenance, expect: Mapping) -> bool:
    """Whether a sidecar records the request that ``expect`` describes. Its keys are
    provenance fields (``mode``, ``seed``, ``index``, ``input_sha256``); ``model`` compares
    the pinned version and weights sha256; ``parameters`` compares each given parameter."""
    for key, want in expect.items():
        if key == "model":
            if (prov.model.version, prov.model.weights_sha256) != (want["version"], want["weights_sha256"]):
                return False
        elif key == "parameters":
            if any(prov.parameters.get(k) != v for k, v in want.items()):
                return False
        elif getattr(prov, key) != want:
            return False
    return True


def complete(output: Path, expect: Mapping | None = None) -> OutputRecord | None:
    """The record of an output that exists with a sidecar whose checksum matches and that
    answers the request ``expect`` describes (``answers``), else None.

    A volume without a sidecar (a crash between the two writes), with a mismatching
    checksum, or made for another request (another input, model version or parameters)
    is not complete and will be generated again.
    """
    side = sidecar_path(output)
    if not output.is_file() or not side.is_file():  # missing, or a folder in the way (write_volume says so)
        return None
    try:
        prov = Provenance.model_validate_json(side.read_text())
    except ValueError:
        return None
    if expect is not None and not answers(prov, expect):
        return None
    digest = io.sha256_file(output)
    if digest != prov.output_sha256:
        return None
    return OutputRecord(path=str(output), sha256=digest, sidecar=str(side), input_sha256=prov.input_sha256)


def write_volume(output: Path, array: np.ndarray, affine: np.ndarray, provenance: dict,
                 dtype: str = "float32", compresslevel: int = 0) -> OutputRecord:
    """Write ``output`` (.nii.gz) then its sidecar, each atomically; the sidecar goes last,
    so its presence (with a matching checksum) means the output is complete.

    ``dtype="int16"`` stores an image in [0, 1] as scaled int16 (``scl_slope`` 1/32767, the
    way scanners store MRI): half the bytes of float32, steps far below the model's error.
    An image on a wider scale (an input's own intensities) gets the slope ``peak / 32767``.
    An int16 ``array`` is taken as already quantised (``io.quantize``, or
    ``vae3d.generation.quantize`` on the model's thread).
    Neither file is fsynced: ``complete`` checks the checksum on every re-run instead.
    """
    _room_for(output)
    if dtype == "int16":
        peak = 1.0 if array.dtype == np.int16 else max(1.0, float(np.abs(array).max()))
        stored = array if array.dtype == np.int16 else io.quantize(array, scale=io.INT16_SCALE / peak)
        data = io.nifti_gzip_parts(stored, affine, np.int16, compresslevel, slope=io.INT16_STEP * peak)
    elif dtype == "float32":
        data = io.nifti_gzip_parts(array, affine, np.float32, compresslevel)
    else:
        raise ValueError(f"{output}: dtype must be 'int16' or 'float32', got {dtype!r}")
    io.atomic_write_bytes(output, data, durable=False)
    return _sidecar(output, io.sha256_bytes(data), provenance, durable=False)


def _room_for(output: Path) -> None:
    """A folder where an output or its sidecar goes is a clear error before anything is written."""
    for path in (output, sidecar_path(output)):
        if path.is_dir():
            raise PipelineError(f"{path} is a folder, where an output file of this run goes", where=str(path),
                                fix="move or rename that folder, then re-run: the outputs already written are kept",
                                exit_code=2)


def write_sidecar(output: Path, digest: str, provenance: dict, durable: bool = True) -> OutputRecord:
    """The provenance sidecar of ``output`` (written by another writer: parquet, png), atomically."""
    _room_for(output)
    return _sidecar(output, digest, provenance, durable)


def _sidecar(output: Path, digest: str, provenance: dict, durable: bool) -> OutputRecord:
    prov = Provenance(output=output.name, output_sha256=digest, **provenance)
    side = sidecar_path(output)
    io.atomic_write_text(side, prov.model_dump_json(indent=1), durable)
    return OutputRecord(path=str(output), sha256=digest, sidecar=str(side), input_sha256=prov.input_sha256)
