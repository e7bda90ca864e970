"""The end-to-end demo: every stage that exists, on the sample cohort, in one process."""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from rich.console import Console

from flows.ingest import run_ingest
from flows.preprocess import run_preprocess
from flows.settings import Settings
from flows.workspace import Workspace


@flow(name="demo")
def demo_flow(settings: Settings, data: str) -> dict[str, str]:
    ws = Workspace.at(settings.workspace)
    manifest, quarantine = run_ingest([data], settings)
    index = run_preprocess(settings)
    return {
        "sample data": data,
        "manifest": f"{ws.manifest} ({len(manifest.rows)} accepted, {len(quarantine.records)} quarantined)",
        "dataset index": f"{ws.dataset_index} ({len(index.items)} volumes)",
        "preprocess montage": str(ws.figures / "preprocess_montage.png"),
    }


def run_demo(settings: Settings, data: Path, console: Console) -> None:
    outputs = demo_flow(settings, str(data))
    console.rule("demo finished")
    for name, where in outputs.items():
        console.print(f"[bold]{name}[/bold]: {where}")
