"""Entry points for scheduled deployments (``prefect.yaml``) and ``vae3d serve``.

Deployments pass primitives (JSON-able parameters); each entry point builds the typed
settings from the worker's environment / config file, like the CLI does.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from prefect import flow

from data_contracts.generation import DEFAULT_MODEL_URI, GenerationRequest
from flows.generate import run_generate
from flows.ingest import run_ingest
from flows.preprocess import run_preprocess
from flows.settings import Settings, load_settings
from flows.train import train_flow

PREFECT_YAML = Path(__file__).resolve().parents[1] / "prefect.yaml"


def _settings(workspace: str | None, config: str | None) -> Settings:
    return load_settings(Path(config) if config else None, workspace=workspace)


@flow(name="scheduled-ingest")
def scheduled_ingest(sources: list[str], workspace: str | None = None, config: str | None = None,
                     strict: bool = False) -> dict:
    """Validate new scans; with ``strict`` the run fails when anything was quarantined."""
    manifest, quarantine = run_ingest(sources, _settings(workspace, config))
    if strict and quarantine.records:
        raise RuntimeError(f"{len(quarantine.records)} files quarantined; see quarantine.json")
    return {"accepted": len(manifest.rows), "quarantined": len(quarantine.records)}


@flow(name="retrain")
def retrain(workspace: str | None = None, config: str | None = None) -> dict:
    """Preprocess what was ingested, then train, register and gate promotion."""
    settings = _settings(workspace, config)
    run_preprocess(settings)
    return train_flow(settings)


@flow(name="scheduled-generate")
def scheduled_generate(mode: str, inputs: list[str] | None = None, n: int = 0, seed: int = 0,
                       model_uri: str = DEFAULT_MODEL_URI, out: str | None = None,
                       workspace: str | None = None, config: str | None = None) -> dict:
    """One generate request (any mode) from primitive parameters."""
    request = GenerationRequest(mode=mode, inputs=tuple(inputs or ()), n=n, seed=seed, model_uri=model_uri)
    manifest = run_generate(request, _settings(workspace, config), out)
    return {"outputs": len(manifest.outputs), "skipped_existing": manifest.skipped_existing}


def deployments_from_yaml(path: Path = PREFECT_YAML, workspace: str | None = None):
    """``RunnerDeployment``s for every deployment in prefect.yaml, schedules included."""
    from prefect.flows import load_flow_from_entrypoint

    spec = yaml.safe_load(Path(path).read_text())
    root = Path(path).parent
    out = []
    for d in spec["deployments"]:
        file, name = d["entrypoint"].split(":")
        fl = load_flow_from_entrypoint(f"{root / file}:{name}")
        params = dict(d.get("parameters") or {})
        if workspace:
            params["workspace"] = workspace
        crons = [s["cron"] for s in d.get("schedules") or [] if "cron" in s]
        out.append(fl.to_deployment(name=d["name"], parameters=params, cron=crons or None,
                                    tags=d.get("tags"), description=d.get("description")))
    return out
