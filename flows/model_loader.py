"""Resolve ``models:/NAME@ALIAS`` (or a version) to one pinned, verified model."""

from __future__ import annotations

import functools
import re

import mlflow
from mlflow.exceptions import MlflowException

from data_contracts import PipelineError
from data_contracts.generation import DEFAULT_MODEL_URI, ModelRef
from flows.settings import Settings
from flows.tracking import init_store
from flows.workspace import Workspace
from vae3d.device import resolve_device

_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[\w-]+)|/(?P<version>\d+))$")


def resolve(uri: str, settings: Settings) -> ModelRef:
    """Pin an alias to its current version, so every task of a run uses the same model."""
    client, _ = init_store(Workspace.at(settings.workspace), settings.mlflow)
    m = _URI.match(uri)
    if not m:
        raise PipelineError(f"model {uri!r} is not a registry URI", where="--model",
                            fix=f"use models:/NAME@ALIAS or models:/NAME/VERSION, e.g. {DEFAULT_MODEL_URI}",
                            exit_code=2)
    name = m["name"]
    try:
        mv = (client.get_model_version_by_alias(name, m["alias"]) if m["alias"]
              else client.get_model_version(name, m["version"]))
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST" and "not found" not in str(exc).lower():
            raise  # e.g. an unreachable tracking server: not a missing model
        raise _missing(client, name, uri) from None
    return ModelRef(
        uri=uri, name=name, version=str(mv.version), alias=m["alias"], run_id=mv.run_id,
        weights_sha256=mv.tags.get("weights_sha256", ""),
    )


def _missing(client, name: str, uri: str) -> PipelineError:
    """What a missing model URI should say: train one, or the aliases and versions that exist."""
    try:
        model = client.get_registered_model(name)
    except MlflowException:
        return PipelineError(f"no model named {name!r} is registered yet", where=client.tracking_uri,
                             fix="train one first: vae3d train (or vae3d demo, the whole pipeline on sample data)")
    aliases = ", ".join(f"@{a} (v{v})" for a, v in sorted(model.aliases.items())) or "none"
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
    return PipelineError(
        f"{uri} does not exist", where=client.tracking_uri,
        fix=f"use an alias or version that exists: aliases {aliases}; versions {', '.join(map(str, versions))} "
            f"(e.g. --model models:/{name}@champion or models:/{name}/{versions[-1] if versions else 1})")


@functools.lru_cache(maxsize=4)
def _load(pinned: str, tracking: str, device: str):
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(tracking)
    wrapper = mlflow.pyfunc.load_model(pinned).unwrap_python_model()
    wrapper.model.to(device)
    if not hasattr(wrapper, "restorer"):  # a version registered before anomaly restorers: its stored code has none
        wrapper.restorer = wrapper.model
    wrapper.restorer.to(device)  # the anomaly restorer (the main model itself for a version without one)
    healthy = getattr(wrapper, "healthy", None)
    if healthy is not None and healthy.head is not None:  # the anomaly map's discriminative head
        healthy.head.to(device)
    return wrapper


def load(ref: ModelRef, settings: Settings):
    """The verified model wrapper (``.model``, ``.meta``), loaded once per process and
    placed on ``settings.generate.device``."""
    client, _ = init_store(Workspace.at(settings.workspace), settings.mlflow)
    device = str(resolve_device(settings.generate.device))
    pinned = f"models:/{ref.name}/{ref.version}"
    try:
        wrapper = _load(pinned, client.tracking_uri, device)
    except (MlflowException, OSError) as exc:
        try:
            source = client.get_model_version(ref.name, ref.version).source
        except MlflowException:
            source = "?"
        raise PipelineError(
            f"{ref.name} v{ref.version} is registered but its files cannot be loaded "
            f"({type(exc).__name__}: {(str(exc).splitlines() or ['no detail'])[0][:200]})",
            where=f"{pinned} at {source}",
            fix="its artifacts were deleted or moved: restore them, pick another version (--model "
                f"models:/{ref.name}/N), or train and register a new one (vae3d train --fresh)") from None
    if ref.weights_sha256 and wrapper.meta["weights_sha256"] != ref.weights_sha256:
        raise RuntimeError(
            f"{ref.name} v{ref.version}: weights sha256 {wrapper.meta['weights_sha256']} differ from "
            f"the registered {ref.weights_sha256}; the artifact was altered"
        )
    return wrapper


