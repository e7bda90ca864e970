"""Model registry: log the pyfunc model, register a version, gate promotion to champion."""

from __future__ import annotations

import functools
import json
import subprocess
import tempfile
import warnings
from importlib import metadata
from pathlib import Path

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec

import data_contracts
import vae3d
from vae3d.files import sha256_file

CANDIDATE, CHAMPION = "candidate", "champion"
PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """Package version plus git commit when run from a checkout ("0.1.0+1a2b3c4").

    Read once per process: it names the code this process imported, and it goes into
    every output's sidecar (a git call per volume cost more than decoding one).
    """
    version = metadata.version("vae3d-pipeline")
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return f"{version}+{commit}"


#: what the pyfunc model imports (``flows/pyfunc_model.py``), pinned to this environment's versions
#: (einops: MONAI's DiffusionModelUNet, for a latent diffusion prior)
MODEL_REQUIREMENTS = ("torch", "monai", "numpy", "pydantic", "mlflow", "einops")


def signature(size: int) -> ModelSignature:
    """The input tensor and the ``mode``, ``seed`` and ``temperature`` parameters. No output schema:
    ``embed`` returns (B, latent size) and the other modes (B, 1, S, S, S); ``output_shapes`` goes
    into the model's metadata.

    No input example is logged: one 64^3 volume is 1 MiB of float32 and about 5 MB as the JSON
    MLflow stores, in every version; the signature already gives shape and dtype, and the
    README shows a call."""
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 1, size, size, size))]),
        params=ParamSchema([ParamSpec("mode", "string", "reconstruct"), ParamSpec("seed", "long", 0),
                            ParamSpec("temperature", "double", 1.0)]),
    )


def output_shapes(size: int, latent_size: int) -> dict[str, list[int]]:
    volume = [-1, 1, size, size, size]
    return {"reconstruct": volume, "denoise": volume, "anomaly": volume, "embed": [-1, latent_size],
            "synthetic": volume}


def _requirements() -> list[str]:
    pins = []
    for dist in MODEL_REQUIREMENTS:
        try:
            version = metadata.version(dist).split("+")[0]
            pins.append(f"{dist}=={version}")
        except metadata.PackageNotFoundError:  # pragma: no cover
            pins.append(dist)
    return pins


def log_and_register(
    client: MlflowClient, run_id: str, name: str, weights: Path, meta: dict, tags: dict[str, str], size: int,
    extra: dict[str, Path] | None = None, latent_size: int | None = None,
) -> str:
    """Log the pyfunc (models-from-code, vae3d bundled) and register a new version as candidate.

    ``extra``: more artifacts by name (the anomaly statistics, the latent prior); the sha256 of each is recorded in
    the metadata (``artifacts_sha256``) and checked when the model loads.

    Returns the new version number.
    """
    extra = extra or {}
    meta = {**meta, "weights_sha256": sha256_file(weights),
            "artifacts_sha256": {k: sha256_file(p) for k, p in extra.items()}}
    with tempfile.TemporaryDirectory() as tmp:
        meta_path = Path(tmp) / "meta.json"
        meta_path.write_text(json.dumps(meta, indent=1))
        with mlflow.start_run(run_id=run_id), warnings.catch_warnings():
            # no input example, by decision (``signature``): MLflow's reminder of it is not news
            warnings.filterwarnings("ignore", message=".*input example was not provided", category=UserWarning)
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(PYFUNC_CODE),
                artifacts={"weights": str(weights), "meta": str(meta_path), **{k: str(p) for k, p in extra.items()}},
                # the library and the contracts it imports: the model needs no project install
                code_paths=[str(Path(vae3d.__file__).parent), str(Path(data_contracts.__file__).parent)],
                signature=signature(size),
                pip_requirements=_requirements(),
                metadata={"output_shapes": output_shapes(size, latent_size or -1)},
            )
    mv = mlflow.register_model(info.model_uri, name, tags={**tags, "weights_sha256": meta["weights_sha256"]})
    client.set_registered_model_alias(name, CANDIDATE, mv.version)
    return str(mv.version)


def find_version(client: MlflowClient, name: str, run_id: str, weights_sha256: str) -> str | None:
    """The version of ``name`` already registered from ``run_id`` with these weights, if any:
    registration is find-or-register, so a re-run after a kill adds no second version."""
    try:
        versions = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    except MlflowException:  # no registered model of that name yet
        return None
    same = [int(v.version) for v in versions if v.tags.get("weights_sha256") == weights_sha256]
    return str(min(same)) if same else None


def promote_if_better(client: MlflowClient, name: str, version: str, metric: str,
                      min_val_ssim: float = 0.0) -> dict[str, str]:
    """Move ``champion`` to ``version`` only if its validation SSIM reaches the quality floor
    ``min_val_ssim`` and its ``metric`` beats the current champion's."""
    new = client.get_model_version(name, version)
    new_value = float(new.tags[metric])
    try:
        champ = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        champ = None
    val_ssim = float(new.tags.get("val_ssim", "nan"))
    if champ is not None and str(champ.version) == str(version):  # a re-run of the registration
        return {"version": version, "decision": "already champion", "reason": f"v{version} is the champion",
                "champion": version}
    if not val_ssim >= min_val_ssim:
        promoted = False
        reason = (f"v{version} val_ssim={val_ssim:.4f} is below the quality floor registry.min_val_ssim="
                  f"{min_val_ssim:g}; train longer or on more scans (VAE3D_REGISTRY__MIN_VAL_SSIM sets the floor)")
    elif champ is None:
        promoted, reason = True, f"no champion yet; v{version} {metric}={new_value:.4f}"
    else:
        old_value = float(champ.tags.get(metric, "-inf"))
        promoted = new_value > old_value
        verb = "beats" if promoted else "does not beat"
        reason = f"v{version} {metric}={new_value:.4f} {verb} champion v{champ.version} ({old_value:.4f})"
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
    decision = "promoted to champion" if promoted else "kept as candidate"
    client.set_model_version_tag(name, version, "promotion", f"{decision}: {reason}")
    return {"version": version, "decision": decision, "reason": reason,
            "champion": version if promoted else (str(champ.version) if champ else "")}
