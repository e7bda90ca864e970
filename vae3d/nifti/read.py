"""Reading NIfTI: bounded, from bytes read once.

The header is parsed from the first bytes of the (decompressed) stream and the declared
data size is checked against a limit *before* the rest is decompressed, so a crafted file
cannot make us allocate gigabytes. Gunzipping goes through ISA-L (``isal``), several times
faster than the standard library.
"""

from __future__ import annotations

import io
import os
import stat
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from isal import igzip

from vae3d.files import file_kind

NIFTI_SUFFIXES = (".nii", ".nii.gz")
GZIP_MAGIC = b"\x1f\x8b"
_HEADER_BYTES = 540  # a NIfTI-2 header; NIfTI-1 needs 348 (+4 extension flag)
_CHUNK = 1 << 20


class NiftiReadError(Exception):
    """A file could not be read as a single-file NIfTI-1/2 volume.

    ``code`` is a stable, machine-readable reason (``empty_file``, ``not_nifti``,
    ``unreadable``, ``truncated``, ``too_large``); the message says what was found.
    """

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Volume:
    """A 3D image and its voxel-to-world (RAS+ mm) affine."""

    array: np.ndarray  # (X, Y, Z)
    affine: np.ndarray  # (4, 4)

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))


def is_nifti_path(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(NIFTI_SUFFIXES)

def _open_stream(raw: bytes) -> io.BufferedIOBase:
    if raw[:2] == GZIP_MAGIC:
        return igzip.IGzipFile(fileobj=io.BytesIO(raw), mode="rb")
    return io.BytesIO(raw)


def _read_at_most(stream, n: int) -> bytes:
    parts, left = [], n
    while left > 0:
        chunk = stream.read(min(left, _CHUNK))
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def sniff_header(head: bytes) -> nib.Nifti1Header | nib.Nifti2Header:
    """Parse a NIfTI-1 or NIfTI-2 header from the first bytes of a decompressed stream.

    Raises:
        NiftiReadError: ``not_nifti`` when neither header size nor magic matches.
    """
    if len(head) < 348:
        raise NiftiReadError("not_nifti", f"only {len(head)} bytes, shorter than a NIfTI header")
    for klass, size, magic_at, magic in (
        (nib.Nifti1Header, 348, 344, (b"n+1\x00",)),
        (nib.Nifti2Header, 540, 4, (b"n+2\x00",)),
    ):
        for order in ("<", ">"):
            if int(np.frombuffer(head[:4], dtype=f"{order}i4")[0]) != size:
                continue
            found = head[magic_at : magic_at + 4]
            if found not in magic:
                raise NiftiReadError(
                    "not_nifti",
                    f"header size says {klass.__name__} but magic is {found!r}; only single-file "
                    "'.nii' volumes are supported (convert .hdr/.img pairs with nibabel first)",
                )
            if len(head) < size:
                raise NiftiReadError("truncated", f"header needs {size} bytes, file has {len(head)}")
            try:  # hostile fields (unknown datatype, absurd dims) fail inside nibabel in many ways
                header = klass.from_fileobj(io.BytesIO(head[:size]))
                header.get_data_dtype(), header.get_data_shape(), header.get_zooms()
            except Exception as exc:
                raise NiftiReadError("not_nifti", f"invalid {klass.__name__}: {exc}") from None
            return header
    raise NiftiReadError("not_nifti", "first 4 bytes are not a NIfTI-1 (348) or NIfTI-2 (540) header size")


def declared_nbytes(header) -> int:
    """Bytes of voxel data (plus offset) the header says follow; computed without allocating."""
    shape = [int(d) for d in header.get_data_shape()]
    n = 1
    for d in shape:
        n *= max(d, 0)
    return int(header["vox_offset"]) + n * int(header.get_data_dtype().itemsize)

def read_raw(path: Path) -> bytes:
    """The file's bytes, read once (hash them and parse them from the same buffer).

    Only a regular file is read: it is opened non-blocking (a FIFO would otherwise block
    ``open`` until a writer comes), then checked with ``fstat``.

    Raises:
        NiftiReadError: ``not_regular_file`` for a FIFO, device or socket.
        OSError: the file cannot be opened (permissions, a broken symlink).
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # read-only: sources are never modified
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NiftiReadError("not_regular_file", f"{path} is {file_kind(mode)}, not a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read()
    finally:
        os.close(fd)


def parse_header(raw: bytes):
    """Header of a NIfTI file given its raw (possibly gzipped) bytes."""
    if not raw:
        raise NiftiReadError("empty_file", "the file is empty (0 bytes)")
    try:
        head = _read_at_most(_open_stream(raw), _HEADER_BYTES)
    except (OSError, EOFError, zlib.error) as exc:
        raise NiftiReadError("unreadable", f"gzip stream is corrupt or truncated: {exc}") from exc
    return sniff_header(head)


def image_from_bytes(raw: bytes, max_decompressed_bytes: int) -> nib.Nifti1Image | nib.Nifti2Image:
    """Decode a whole NIfTI image from raw file bytes, refusing oversized payloads.

    The header's declared size is checked first; the stream is then decompressed up to that
    size plus one byte, so a lying header cannot inflate memory beyond the limit either.
    """
    header = parse_header(raw)
    need = declared_nbytes(header)
    if need > max_decompressed_bytes:
        raise NiftiReadError(
            "too_large",
            f"header declares {need / 2**20:.1f} MiB of data, above the limit of "
            f"{max_decompressed_bytes / 2**20:.1f} MiB",
        )
    try:
        data = _read_at_most(_open_stream(raw), need + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise NiftiReadError("truncated", f"gzip stream ends early or is corrupt: {exc}") from exc
    if len(data) < need:
        raise NiftiReadError(
            "truncated", f"file holds {len(data)} bytes of header+data, header declares {need}"
        )
    klass = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    try:
        return klass.from_bytes(data[:need])
    except Exception as exc:
        raise NiftiReadError("unreadable", f"nibabel cannot decode the image: {exc}") from None


def load_volume(path: Path, max_decompressed_bytes: int = 2**31) -> Volume:
    """Load a 3D NIfTI volume as float32 with its affine.

    A 4D file whose 4th axis has length 1 is read as 3D. Scaling (``scl_slope``) is applied.

    Raises:
        NiftiReadError: the file is not a readable single-file NIfTI volume.
        ValueError: the image is not 3D.
    """
    img = image_from_bytes(read_raw(path), max_decompressed_bytes)
    return volume_from_image(img, path)


def volume_from_image(img, path: Path | str = "<memory>") -> Volume:
    array = img.get_fdata(dtype=np.float32)
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise ValueError(f"{path}: expected a 3D volume, got shape {array.shape}")
    return Volume(np.ascontiguousarray(array), np.asarray(img.affine, dtype=np.float64))
