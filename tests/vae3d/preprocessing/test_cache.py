import io

import numpy as np

from vae3d.preprocessing import CachedVolume, PreprocessCache


def _item(seed=0):
    rng = np.random.default_rng(seed)
    return CachedVolume(
        image=rng.random((1, 8, 8, 8), dtype=np.float32), affine=np.eye(4) * 2,
        original_affine=np.eye(4), original_shape=np.array([16, 16, 16]),
    )


def test_roundtrip(tmp_path):
    cache = PreprocessCache(tmp_path)
    item = _item()
    cache.store("a" * 64, item)
    back = cache.load("a" * 64)
    np.testing.assert_array_equal(back.image, item.image)
    assert back.digest() == item.digest()
    assert cache.load("b" * 64) is None


def test_tampered_payload_with_valid_zip_is_rejected(tmp_path):
    """A well-formed file whose image no longer matches its digest is not used."""
    cache = PreprocessCache(tmp_path)
    item = _item()
    path = cache.store("a" * 64, item)
    with np.load(path) as z:
        fields = {k: z[k] for k in z.files}
    fields["image"] = fields["image"] * 0.5
    buf = io.BytesIO()
    np.savez(buf, **fields)
    path.write_bytes(buf.getvalue())
    assert cache.load("a" * 64) is None


def test_garbage_and_truncation_are_rejected(tmp_path):
    cache = PreprocessCache(tmp_path)
    path = cache.store("a" * 64, _item())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert cache.load("a" * 64) is None
    path.write_bytes(b"not a zip at all")
    assert cache.load("a" * 64) is None
