"""Writing NIfTI: byte for byte what nibabel writes, with the header built once per batch
and gzip laid out by hand when it stores rather than compresses.

Hand-written because nibabel re-derives the header and copies the voxels on every save;
for batch outputs that cost more than the model. zlib (not ISA-L) compresses, so the same
voxels give the same bytes in every process.
"""

from __future__ import annotations

import functools
import struct
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from isal import isal_zlib

from vae3d.files import atomic_write_bytes

_STORED_BLOCK = 65535  # the most bytes one stored deflate block holds
INT16_SCALE = 32767.0  # scaled-int16 outputs: [0, 1] in 32767 steps ...
INT16_STEP = 1.0 / INT16_SCALE  # ... and this is their scl_slope


@functools.lru_cache(maxsize=32)
def _nifti1_prefix(shape: tuple[int, ...], affine: bytes, dtype: str, slope: float | None,
                   codes: tuple[int, int] = (1, 1)) -> bytes:
    """The 352 bytes before the voxels: nibabel's header for these facts + the empty
    extension flag. Built once per (shape, affine, dtype, slope): batch outputs share it."""
    aff = np.frombuffer(affine, dtype=np.float64).reshape(4, 4)
    img = nib.Nifti1Image(np.empty((1,) * len(shape), dtype=dtype), aff)
    hdr = img.header
    hdr.set_data_shape(shape)
    hdr.set_qform(aff, code=int(codes[0]))
    hdr.set_sform(aff, code=int(codes[1]))
    hdr.set_xyzt_units("mm", "sec")
    hdr.set_slope_inter(1.0 if slope is None else slope, 0.0)
    hdr["vox_offset"] = 352
    return hdr.binaryblock + b"\0\0\0\0"


def quantize(array: np.ndarray, scale: float = INT16_SCALE, dtype=np.int16) -> np.ndarray:
    """``round(array * scale)`` (in float32) as ``dtype``, clipped to its range: store it
    with ``encode_nifti(..., slope=1 / scale)``."""
    info = np.iinfo(dtype)
    return np.clip(np.rint(np.asarray(array, dtype=np.float32) * np.float32(scale)), info.min, info.max).astype(dtype)


def encode_nifti(array: np.ndarray, affine: np.ndarray, dtype=np.float32, compresslevel: int = 1,
                 slope: float | None = None, codes: tuple[int, int] = (1, 1)) -> bytes:
    """NIfTI-1 bytes for ``array`` (cast to ``dtype``) on ``affine``, gzipped deterministically
    (mtime 0). Byte for byte what nibabel writes, with the header built once per batch.

    Args:
        slope: the header's ``scl_slope`` for already-quantised data (see ``quantize``);
            readers such as nibabel's ``get_fdata`` and MONAI's ``LoadImage`` apply it.
        compresslevel: 0 writes stored (uncompressed) gzip blocks, the fastest; 1-9 are
            zlib's deflate levels. zlib, not ISA-L: the same bytes must give the same file in
            every process (ISA-L's encoder once gave another, equally valid, encoding of the
            same voxels in a re-run; see intel/isa-l#140). ISA-L still does all reading.
        codes: the header's (qform_code, sform_code); 1 (scanner) unless the caller keeps an input's.
    """
    return b"".join(nifti_gzip_parts(array, affine, dtype, compresslevel, slope, codes))


def nifti_gzip_parts(array: np.ndarray, affine: np.ndarray, dtype=np.float32, compresslevel: int = 1,
                     slope: float | None = None, codes: tuple[int, int] = (1, 1)) -> list[bytes | memoryview]:
    """``encode_nifti``'s bytes as a list of buffers, to write (and hash) one after the other.

    Level 0 lays out stored deflate blocks over views of the voxel bytes: a volume already
    in NIfTI's first-axis-fastest layout reaches the file with no copy in Python.
    """
    if not 0 <= compresslevel <= 9:
        raise ValueError(f"compresslevel must be 0 (stored) to 9, got {compresslevel}")
    arr = np.asarray(array).astype(dtype, copy=False)
    affine = np.ascontiguousarray(affine, dtype=np.float64)
    prefix = _nifti1_prefix(arr.shape, affine.tobytes(), arr.dtype.str, slope, tuple(codes))
    # NIfTI stores the first axis fastest: an array already laid out so (such as the
    # model's outputs, see ``vae3d.model.pixel_shuffle_3d``) is written without a copy
    voxels = memoryview(np.asfortranarray(arr).T.reshape(-1).view(np.uint8))
    if compresslevel:  # exactly gzip.compress(..., mtime=0)
        return [zlib.compress(prefix + voxels, compresslevel, wbits=31)]
    # gzip's header and trailer as zlib writes them (mtime 0, OS Unix) around stored blocks
    header = struct.pack("<BBBBLBB", 0x1F, 0x8B, 8, 0, 0, 4, 3)
    crc = isal_zlib.crc32(voxels, isal_zlib.crc32(prefix))
    trailer = struct.pack("<LL", crc, (len(prefix) + len(voxels)) & 0xFFFFFFFF)
    first = prefix + voxels[: _STORED_BLOCK - len(prefix)]
    rest = range(len(first) - len(prefix), len(voxels), _STORED_BLOCK)
    blocks = [first] + [voxels[i : i + _STORED_BLOCK] for i in rest]
    parts = [header]
    for i, block in enumerate(blocks):
        n = len(block)
        parts += [struct.pack("<BHH", i == len(blocks) - 1, n, n ^ 0xFFFF), block]
    return [*parts, trailer]


def save_volume(path: Path, array: np.ndarray, affine: np.ndarray, dtype=np.float32) -> Path:
    """Write a ``.nii.gz`` atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    if not path.name.endswith(".nii.gz"):
        raise ValueError(f"{path}: output volumes are written as '.nii.gz'; rename the target")
    atomic_write_bytes(path, encode_nifti(array, affine, dtype=dtype))
    return path
