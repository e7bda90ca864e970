"""The end-to-end demo: every stage on the sample cohort, in one process."""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from rich.console import Console

from data_contracts.generation import GenerationRequest
from flows.evaluate import evaluate_flow
from flows.generate import run_generate
from flows.ingest import run_ingest
from flows.preprocess import run_preprocess
from flows.settings import Settings
from flows.train import train_flow
from flows.workspace import Workspace
from vae3d.outputs import file_stem, with_entity
from vae3d.sample_data import thick_slice_copy


@flow(name="demo")
def demo_flow(settings: Settings, data: str, patients: str) -> dict[str, str]:
    ws = Workspace.at(settings.workspace)
    manifest, quarantine = run_ingest([data], settings)
    index = run_preprocess(settings)
    trained = train_flow(settings)
    test = [r.header.path for r in manifest.split("test")] or [r.header.path for r in manifest.rows[:2]]
    lesioned = tuple(str(p) for p in sorted(Path(patients).glob("sub-*/anat/sub-*_T1w.nii.gz")))
    labels = {r.header.sha256: r.split for r in manifest.rows}
    seed = settings.seed
    # what this run trained, champion or not (a version below the quality floor stays candidate)
    model = {"model_uri": f"models:/{settings.mlflow.registered_model}/{trained['version']}"}
    thick_dir = ws.root / "sample_data" / "thick"
    thick = [str(thick_slice_copy(Path(p), thick_dir / f"{with_entity(file_stem(p), 'acq', 'thick')}.nii.gz"))
             for p in test[:2]]
    outputs = {
        "synthetic": run_generate(GenerationRequest(mode="synthetic", n=8, seed=seed, **model), settings),
        "augment": run_generate(GenerationRequest(mode="augment", inputs=tuple(test[:2]), variants=3, seed=seed,
                                                      **model), settings),
        "denoise": run_generate(GenerationRequest(mode="denoise", inputs=tuple(test), **model), settings),
        "super-resolve": run_generate(GenerationRequest(mode="super-resolve", inputs=tuple(thick), **model), settings),
        "anomaly": run_generate(GenerationRequest(mode="anomaly", inputs=lesioned, **model), settings),
        "embed": run_generate(GenerationRequest(mode="embed", inputs=tuple(r.header.path for r in manifest.rows),
                                                    **model),
                              settings, labels=labels),
    }
    evaluation = evaluate_flow(settings, model["model_uri"])
    summary = {
        "sample data": (f"{data} (+ lesioned patients in {patients}, masks under derivatives/lesions; thick-slice "
                        f"6 mm copies of {len(thick)} test scans in {ws.root / 'sample_data' / 'thick'})"),
        "manifest": f"{ws.manifest} ({len(manifest.rows)} accepted, {len(quarantine.records)} quarantined)",
        "dataset index": f"{ws.dataset_index} ({len(index.items)} volumes)",
        "model": (f"vae3d v{trained['version']} ({trained['decision']}; {settings.train.init} start), val SSIM "
                  f"{trained['best'].get('val_ssim', float('nan')):.3f}, MLflow run {trained['run_id']}"),
    }
    for mode, m in outputs.items():
        folder = Path(m.outputs[0].path).parent if m.outputs else "-"
        summary[mode] = f"{folder} ({len(m.outputs)} files, run_manifest.json)"
    met = sum(evaluation["targets"].values())
    evaluated = f"{evaluation['model']['name']}-v{evaluation['model']['version']}"
    summary["evaluation"] = (f"{ws.root / 'evaluation' / evaluated / 'report.md'} "
                             f"({met}/{len(evaluation['targets'])} targets met)")
    return summary


def run_demo(settings: Settings, data: Path, patients: Path, console: Console, ui: str) -> None:
    summary = demo_flow(settings, str(data), str(patients))
    console.rule("demo finished")
    for name, where in summary.items():
        console.print(f"[bold]{name}[/bold]: {where}")
    console.print("\nOpen the MLflow UI (runs, figures, registered model):")
    console.print(ui, soft_wrap=True, highlight=False, markup=False)  # one line, as it can be pasted


