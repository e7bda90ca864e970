"""All NIfTI reading and writing: everything else works on ``(array, affine)`` pairs."""

from vae3d.nifti.read import (
    NIFTI_SUFFIXES,
    NiftiReadError,
    Volume,
    declared_nbytes,
    image_from_bytes,
    is_nifti_path,
    load_volume,
    parse_header,
    read_raw,
    sniff_header,
    volume_from_image,
)
from vae3d.nifti.write import INT16_SCALE, INT16_STEP, encode_nifti, nifti_gzip_parts, quantize, save_volume

__all__ = [
    "INT16_SCALE", "INT16_STEP", "NIFTI_SUFFIXES", "NiftiReadError", "Volume", "declared_nbytes", "encode_nifti",
    "image_from_bytes", "is_nifti_path", "load_volume", "nifti_gzip_parts", "parse_header", "quantize", "read_raw",
    "save_volume", "sniff_header", "volume_from_image",
]
