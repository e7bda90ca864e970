"""Generated outputs: their names, their provenance sidecars, and how they are written
(atomically) and recognised as complete on a re-run."""

from __future__ import annotations

import hashlib
import io
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from data_contracts import PipelineError
from data_contracts.generation import GenerationRequest, ModelRef, OutputRecord, Provenance
from vae3d import files, nifti

#: what each input mode adds to the input's file name
SUFFIX = {"augment": "aug", "denoise": "denoised", "super-resolve": "superres", "anomaly": "anomaly"}


def file_stem(path: str | Path) -> str:
    """A file's name without its NIfTI extension."""
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def output_stems(paths: Sequence[str]) -> tuple[dict[str, str], tuple[str, ...]]:
    """Each input's output file stem: its own name, or, where another input has the same
    name (sub-001_T1w from two sites), the name with a ``src-<hash of the input path>``
    entity. Returns (stem by path, the inputs that got the entity)."""
    counts = Counter(file_stem(p) for p in paths)
    stems, renamed = {}, []
    for p in paths:
        stem = file_stem(p)
        if counts[stem] > 1:
            tag = hashlib.sha256(str(Path(p).resolve()).encode()).hexdigest()[:8]
            stem = f"{stem}_src-{tag}"
            renamed.append(p)
        stems[p] = stem
    return stems, tuple(renamed)


def input_outputs(out_dir: Path, stem: str, req: GenerationRequest) -> list[Path]:
    """The files an input mode writes for the input whose output stem is ``stem``."""
    if req.mode == "augment":
        return [Path(out_dir) / f"{stem}_{SUFFIX['augment']}{v:03d}.nii.gz" for v in range(req.variants)]
    return [Path(out_dir) / f"{stem}_{SUFFIX[req.mode]}.nii.gz"]


def synthetic_output(out_dir: Path, seed: int, index: int) -> Path:
    return Path(out_dir) / f"synthetic_seed{seed}_{index:06d}.nii.gz"


def provenance(req: GenerationRequest, ref: ModelRef, index: int, package_version: str, **extra) -> dict:
    """The sidecar fields of output ``index`` of ``req`` (``extra``: input path and sha256, and
    ``parameters`` the output adds to the request's)."""
    params = req.model_dump(mode="json", exclude={"inputs", "model_uri", "mode", "seed"})
    params.update(extra.pop("parameters", {}))
    return {"mode": req.mode, "model": ref, "seed": req.seed, "index": index, "parameters": params,
            "package_version": package_version, **extra}


def expectation(req: GenerationRequest, ref: ModelRef, index: int | None = None,
                input_sha256: str | None = None) -> dict:
    """What the sidecar of an output of ``req`` must record for the output to be reused (``answers``)."""
    out = {"mode": req.mode, "seed": req.seed, "parameters": req.parameters(),
           "model": {"version": ref.version, "weights_sha256": ref.weights_sha256}}
    if index is not None:
        out["index"] = index
    if input_sha256 is not None:
        out["input_sha256"] = input_sha256
    return out


def stored(req: GenerationRequest, image: bool = True) -> dict:
    """How output volumes are stored: anomaly maps (scores, not images) stay float32."""
    return {"dtype": req.dtype if image else "float32", "compresslevel": req.compression}


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
    digest = files.sha256_file(output)
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
    An int16 ``array`` is taken as already quantised (``nifti.quantize``, or
    ``vae3d.generation.quantize`` on the model's thread).
    Neither file is fsynced: ``complete`` checks the checksum on every re-run instead.
    """
    _room_for(output)
    if dtype == "int16":
        peak = 1.0 if array.dtype == np.int16 else max(1.0, float(np.abs(array).max()))
        stored = array if array.dtype == np.int16 else nifti.quantize(array, scale=nifti.INT16_SCALE / peak)
        data = nifti.nifti_gzip_parts(stored, affine, np.int16, compresslevel, slope=nifti.INT16_STEP * peak)
    elif dtype == "float32":
        data = nifti.nifti_gzip_parts(array, affine, np.float32, compresslevel)
    else:
        raise ValueError(f"{output}: dtype must be 'int16' or 'float32', got {dtype!r}")
    files.atomic_write_bytes(output, data, durable=False)
    return _sidecar(output, files.sha256_bytes(data), provenance, durable=False)


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
    prov.write(side, durable)
    return OutputRecord(path=str(output), sha256=digest, sidecar=str(side), input_sha256=prov.input_sha256)


def write_embeddings(rows: list[dict], labels: Mapping[str, str], out_dir: Path, seed: int,
                     prov: dict) -> list[OutputRecord]:
    """``embeddings.parquet`` (id, path, sha256, label, latent per row, in input order) and a PCA
    plot coloured by label, each with its sidecar. ``labels``: by input sha256 or path."""
    import matplotlib.pyplot as plt
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sklearn.decomposition import PCA

    from vae3d.figures import embedding_scatter

    rows = sorted(rows, key=lambda r: r["index"])
    table = pa.table({
        "id": [r["id"] for r in rows], "path": [r["path"] for r in rows], "sha256": [r["sha256"] for r in rows],
        "label": [labels.get(r["sha256"], labels.get(r["path"], "")) for r in rows],
        "latent": pa.array([r["latent"] for r in rows], type=pa.list_(pa.float32())),
    })
    parquet, png = Path(out_dir) / "embeddings.parquet", Path(out_dir) / "embeddings_pca.png"
    buf = io.BytesIO()
    pq.write_table(table, buf)
    files.atomic_write_bytes(parquet, buf.getvalue())
    latent = np.stack([r["latent"] for r in rows])
    xy = PCA(n_components=2, random_state=seed).fit_transform(latent) if len(rows) >= 2 else np.zeros((len(rows), 2))
    fig = embedding_scatter(xy, table.column("label").to_pylist())
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    files.atomic_write_bytes(png, buf.getvalue())
    prov = {**prov, "parameters": {**prov.get("parameters", {}), "n_inputs": len(rows), "projection": "PCA(2)"}}
    return [write_sidecar(p, files.sha256_file(p), prov) for p in (parquet, png)]
