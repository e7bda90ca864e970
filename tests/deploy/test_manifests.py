"""deploy/ and prefect.yaml checked against their schemas (no Docker engine runs here)."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "docker-compose.yml"


def _compose_schema() -> dict:
    text = resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text()
    return json.loads(text)


def test_compose_file_matches_the_compose_spec():
    doc = yaml.safe_load(COMPOSE.read_text())
    jsonschema.validate(doc, _compose_schema())
    assert {"postgres", "minio", "minio-init", "mlflow", "prefect-server", "prefect-worker"} <= set(doc["services"])


def test_compose_services_bind_to_loopback_or_stay_internal():
    doc = yaml.safe_load(COMPOSE.read_text())
    for name, svc in doc["services"].items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_compose_secrets_come_from_the_env_file():
    text = COMPOSE.read_text()
    assert "change-me" not in text
    example = dict(line.split("=", 1) for line in (ROOT / "deploy" / ".env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    for var in set(re.findall(r"\$\{(\w+)", text)):
        assert var in example, f"{var} is used by the compose file but missing from .env.example"


def _render(template, variables: dict):
    """Substitute Prefect's {{ var }} placeholders with the variables' defaults."""
    if isinstance(template, dict):
        return {k: _render(v, variables) for k, v in template.items()}
    if isinstance(template, list):
        return [_render(v, variables) for v in template]
    if isinstance(template, str):
        m = re.fullmatch(r"\{\{ (\w+) \}\}", template)
        if m:
            return variables.get(m[1])
    return template


def test_gpu_work_pool_job_is_a_valid_kubernetes_job():
    spec = json.loads((ROOT / "deploy" / "k8s" / "gpu-work-pool.json").read_text())
    defaults = {k: v.get("default") for k, v in spec["variables"]["properties"].items()}
    defaults.update(command="prefect flow-run execute", env=[{"name": "VAE3D_WORKSPACE", "value": "/workspace"}])
    manifest = _render(spec["job_configuration"]["job_manifest"], defaults)
    manifest["spec"]["template"]["spec"]["containers"][0]["args"] = ["prefect", "flow-run", "execute"]
    kubernetes_validate.validate(manifest, "1.30.0", strict=True)
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    jsonschema.Draft202012Validator.check_schema(spec["variables"])


def test_prefect_yaml_deployments_and_entrypoints():
    from prefect.flows import load_flow_from_entrypoint

    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    names = {d["name"] for d in spec["deployments"]}
    assert {"nightly-ingest", "weekly-retrain", "nightly-synthetic", "denoise", "anomaly", "augment", "embed"} <= names
    for d in spec["deployments"]:
        file, fn = d["entrypoint"].split(":")
        assert load_flow_from_entrypoint(f"{ROOT / file}:{fn}") is not None
        for schedule in d.get("schedules") or []:
            from prefect.client.schemas.schedules import CronSchedule

            CronSchedule(cron=schedule["cron"], timezone=schedule.get("timezone", "UTC"))


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda"])
def test_dockerfiles_run_as_non_root_and_pin_torch(name):
    text = (ROOT / "deploy" / name).read_text()
    assert re.search(r"^USER \w+", text, re.M), "the image must not run as root"
    assert "torch==" in text
