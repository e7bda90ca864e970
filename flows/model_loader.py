"""Resolve ``models:/NAME@ALIAS`` (or a version) to one pinned, verified model."""

from __future__ import annotations

import functools
import re

import mlflow

from data_contracts.generation import ModelRef
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
        raise ValueError(f"model {uri!r}: use models:/NAME@ALIAS or models:/NAME/VERSION")
    name = m["name"]
    mv = (client.get_model_version_by_alias(name, m["alias"]) if m["alias"]
          else client.get_model_version(name, m["version"]))
    return ModelRef(
        uri=uri, name=name, version=str(mv.version), alias=m["alias"], run_id=mv.run_id,
        weights_sha256=mv.tags.get("weights_sha256", ""),
    )


@functools.lru_cache(maxsize=4)
def _load(pinned: str, tracking: str, device: str):
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(tracking)
    wrapper = mlflow.pyfunc.load_model(pinned).unwrap_python_model()
    wrapper.model.to(device)
    return wrapper


def load(ref: ModelRef, settings: Settings):
    """The verified model wrapper (``.model``, ``.meta``), loaded once per process and
    placed on ``settings.generate.device``."""
    client, _ = init_store(Workspace.at(settings.workspace), settings.mlflow)
    device = str(resolve_device(settings.generate.device))
    wrapper = _load(f"models:/{ref.name}/{ref.version}", client.tracking_uri, device)
    if ref.weights_sha256 and wrapper.meta["weights_sha256"] != ref.weights_sha256:
        raise RuntimeError(
            f"{ref.name} v{ref.version}: weights sha256 {wrapper.meta['weights_sha256']} differ from "
            f"the registered {ref.weights_sha256}; the artifact was altered"
        )
    return wrapper


