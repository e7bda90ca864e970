"""Registration is find-or-register per run and weights sha256: a re-run after a kill
between registering and marking, or a re-run of a finished training, adds no version."""

from __future__ import annotations

import json
import shutil
from urllib.parse import urlparse

import pytest
from mlflow import MlflowClient

from data_contracts import PipelineError
from data_contracts.generation import GenerationRequest
from flows.generate import run_generate
from flows.tracking import tracking_uri
from flows.train import train_flow
from flows.workspace import Workspace


def _versions(settings) -> list[str]:
    client = MlflowClient(tracking_uri(Workspace.at(settings.workspace), settings.mlflow))
    return sorted(str(v.version) for v in client.search_model_versions(f"name='{settings.mlflow.registered_model}'"))


def test_re_runs_register_exactly_one_version(preprocessed):
    settings = preprocessed
    first = train_flow(settings)
    assert _versions(settings) == ["1"]

    again = train_flow(settings)  # what weekly-retrain does on unchanged data
    assert again["decision"] == "unchanged" and again["version"] == "1" and again["run_id"] == first["run_id"]
    assert "nothing new was trained or registered" in again["reason"]
    assert _versions(settings) == ["1"]

    # the state a kill between register_model and the marker leaves: registered, not marked
    marker = next(Workspace.at(settings.workspace).checkpoints.glob("*/mlflow_run.json"))
    marker.write_text(json.dumps({"run_id": first["run_id"], "registered_version": None}))
    third = train_flow(settings)
    assert third["version"] == "1" and third["run_id"] == first["run_id"]
    assert _versions(settings) == ["1"]
    assert json.loads(marker.read_text())["registered_version"] == "1"

    fresh = train_flow(settings, fresh=True)  # asked for: a new run, a new version
    assert fresh["run_id"] != first["run_id"] and _versions(settings) == ["1", "2"]


def test_deleted_model_files_name_the_version_and_the_fix(preprocessed, tmp_path):
    settings = preprocessed
    train_flow(settings)
    client = MlflowClient(tracking_uri(Workspace.at(settings.workspace), settings.mlflow))
    location = client.get_model_version_download_uri(settings.mlflow.registered_model, "1")
    shutil.rmtree(urlparse(location).path)  # the registered model's files, deleted by hand
    with pytest.raises(PipelineError, match="v1 is registered but its files cannot be loaded") as info:
        run_generate(GenerationRequest(mode="synthetic", n=1), settings, str(tmp_path / "out"))
    assert "models:/vae3d/1" in info.value.where and "vae3d train --fresh" in info.value.fix
