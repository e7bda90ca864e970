"""All NIfTI reading and writing, plus the atomic-write and hashing helpers.

Everything else in the project works on ``(array, affine)`` pairs; this module is the only
place that touches NIfTI bytes. Reads are bounded: the header is parsed from the first
bytes of the (decompressed) stream and the declared data size is checked against a limit
*before* the rest is decompressed, so a crafted file cannot make us allocate gigabytes.
Reading gunzips through ISA-L (``isal``), several times faster than the standard library;
writing uses the standard library's zlib, whose output is the same in every process.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import stat
import struct
import tempfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from isal import igzip, isal_zlib

NIFTI_SUFFIXES = (".nii", ".nii.gz")
GZIP_MAGIC = b"\x1f\x8b"
_HEADER_BYTES = 540  # a NIfTI-2 header; NIfTI-1 needs 348 (+4 extension flag)
_CHUNK = 1 << 20
_STORED_BLOCK = 65535  # the most bytes one stored deflate block holds


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


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _buffers(data: bytes | Sequence[bytes | memoryview]) -> Sequence[bytes | memoryview]:
    """One buffer, or a list of buffers to be taken one after the other, as a list."""
    return [data] if isinstance(data, (bytes, bytearray, memoryview)) else data


def sha256_bytes(data: bytes | Sequence[bytes | memoryview]) -> str:
    """The sha256 of ``data``, or of the concatenation of a list of buffers."""
    digest = hashlib.sha256()
    for part in _buffers(data):
        digest.update(part)
    return digest.hexdigest()


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
            except Exception as exc:  # noqa: BLE001 - untrusted bytes: every failure means "invalid"
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


def file_kind(mode: int) -> str:
    """What a file that is not a regular file is, from its ``st_mode``: "a FIFO", "a folder", ..."""
    kinds = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))
    return next((kind for test, kind in kinds if test(mode)), "a special file")


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
    except Exception as exc:  # noqa: BLE001 - untrusted bytes
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


INT16_SCALE = 32767.0  # scaled-int16 outputs: [0, 1] in 32767 steps ...
INT16_STEP = 1.0 / INT16_SCALE  # ... and this is their scl_slope


@functools.lru_cache(maxsize=32)
def _nifti1_prefix(shape: tuple[int, ...], affine: bytes, dtype: str, slope: float | None) -> bytes:
    """The 352 bytes before the voxels: nibabel's header for these facts + the empty
    extension flag. Built once per (shape, affine, dtype, slope): batch outputs share it."""
    aff = np.frombuffer(affine, dtype=np.float64).reshape(4, 4)
    img = nib.Nifti1Image(np.empty((1,) * len(shape), dtype=dtype), aff)
    hdr = img.header
    hdr.set_data_shape(shape)
    hdr.set_qform(aff, code=1)
    hdr.set_sform(aff, code=1)
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
                 slope: float | None = None) -> bytes:
    """NIfTI-1 bytes for ``array`` (cast to ``dtype``) on ``affine``, gzipped deterministically
    (mtime 0). Byte for byte what nibabel writes, with the header built once per batch.

    Args:
        slope: the header's ``scl_slope`` for already-quantised data (see ``quantize``);
            readers such as nibabel's ``get_fdata`` and MONAI's ``LoadImage`` apply it.
        compresslevel: 0 writes stored (uncompressed) gzip blocks, the fastest; 1-9 are
            zlib's deflate levels. zlib, not ISA-L: the same bytes must give the same file in
            every process (ISA-L's encoder once gave another, equally valid, encoding of the
            same voxels in a re-run; see intel/isa-l#140). ISA-L still does all reading.
    """
    return b"".join(nifti_gzip_parts(array, affine, dtype, compresslevel, slope))


def nifti_gzip_parts(array: np.ndarray, affine: np.ndarray, dtype=np.float32, compresslevel: int = 1,
                     slope: float | None = None) -> list[bytes | memoryview]:
    """``encode_nifti``'s bytes as a list of buffers, to write (and hash) one after the other.

    Level 0 lays out stored deflate blocks over views of the voxel bytes: a volume already
    in NIfTI's first-axis-fastest layout reaches the file with no copy in Python.
    """
    if not 0 <= compresslevel <= 9:
        raise ValueError(f"compresslevel must be 0 (stored) to 9, got {compresslevel}")
    arr = np.asarray(array).astype(dtype, copy=False)
    affine = np.ascontiguousarray(affine, dtype=np.float64)
    prefix = _nifti1_prefix(arr.shape, affine.tobytes(), arr.dtype.str, slope)
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
    blocks = [first] + [voxels[i : i + _STORED_BLOCK] for i in range(len(first) - len(prefix), len(voxels), _STORED_BLOCK)]
    parts = [header]
    for i, block in enumerate(blocks):
        n = len(block)
        parts += [struct.pack("<BHH", i == len(blocks) - 1, n, n ^ 0xFFFF), block]
    return parts + [trailer]


def save_volume(path: Path, array: np.ndarray, affine: np.ndarray, dtype=np.float32) -> Path:
    """Write a ``.nii.gz`` atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    if not path.name.endswith(".nii.gz"):
        raise ValueError(f"{path}: output volumes are written as '.nii.gz'; rename the target")
    atomic_write_bytes(path, encode_nifti(array, affine, dtype=dtype))
    return path


def atomic_write_bytes(path: Path, data: bytes | Sequence[bytes | memoryview], durable: bool = True) -> None:
    """Write ``data`` (or a list of buffers, one after the other) to ``path`` so readers see
    either the old file or the whole new one.

    ``durable`` fsyncs the data before the rename, so the file also survives a power loss.
    Batch outputs whose checksum is verified on every re-run skip it (a torn file after a
    power loss is found by its checksum and written again): one fsync per file costs more
    than the rest of writing a 64^3 volume.
    """
    path = Path(path)
    tmp = None
    try:
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        except FileNotFoundError:  # the folder is made on first use, not checked on every write
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.writelines(_buffers(data))
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide outputs from the team's other users
        os.replace(tmp, path)
    except OSError as exc:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise OSError(
            exc.errno,
            f"cannot write {path} ({sum(memoryview(p).nbytes for p in _buffers(data))} bytes): {exc.strerror or exc}; nothing was left behind. "
            "Free space or fix the folder's permissions, then re-run: completed outputs are kept",
            str(path),
        ) from exc
    except BaseException:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str, durable: bool = True) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), durable)


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete temp files a killed writer left in ``folder`` (hidden ``.*.tmp*`` names).

    Call it only while holding the folder's lock: then no live writer owns them.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.iterdir()
             if p.is_file() and p.name.startswith(".") and (p.name.endswith(".tmp") or ".tmp." in p.name)]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale
