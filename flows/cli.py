"""The ``vae3d`` command. Each subcommand builds the settings once and runs a Prefect flow.

Prefect and MLflow are imported inside the commands, after ``configure_environment`` has
pointed their state into the workspace.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from flows.settings import Settings, load_settings
from flows.workspace import Workspace, configure_environment

app = typer.Typer(
    name="vae3d",
    help=(
        "Turn folders of NIfTI MRI scans into a trained 3D VAE, then into synthetic, augmented, "
        "denoised, anomaly and embedding outputs.\n\n"
        "Stages: sample-data -> ingest -> preprocess -> train. Every stage reads and writes "
        "validated artifacts in the workspace folder (--workspace, default ./workspace).\n\n"
        "Quick start:  vae3d demo   (sample data, then every stage end to end)"
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
)
console = Console(stderr=True)


class _State:
    workspace: Optional[Path] = None
    config: Optional[Path] = None


state = _State()


@app.callback()
def main(
    workspace: Annotated[
        Optional[Path],
        typer.Option("--workspace", "-w", help="Folder for everything the pipeline writes. Env: VAE3D_WORKSPACE."),
    ] = None,
    config: Annotated[
        Optional[Path], typer.Option("--config", "-c", help="TOML or YAML file with settings (see README).")
    ] = None,
) -> None:
    state.workspace, state.config = workspace, config


def settings(**overrides) -> Settings:
    """The settings for this invocation; also points Prefect/MLflow state into the workspace."""
    try:
        s = load_settings(state.config, workspace=state.workspace, **overrides)
    except (ValueError, FileNotFoundError) as exc:
        console.print(f"[red]Invalid settings:[/red] {exc}")
        raise typer.Exit(2) from None
    configure_environment(Workspace.at(s.workspace))
    return s


@app.command("sample-data")
def sample_data(
    out: Annotated[Path, typer.Argument(help="Folder to write sub-XXX_T1w.nii.gz files into.")],
    n: Annotated[int, typer.Option("--n", "-n", min=1, help="Number of subjects.")] = 24,
    seed: Annotated[int, typer.Option(help="Same seed, same bytes.")] = 0,
    spacing: Annotated[float, typer.Option(help="Voxel size in mm (1.0 = the template's own grid).")] = 2.0,
    lesion_fraction: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Fraction of subjects given synthetic lesions (masks under derivatives/).")
    ] = 0.0,
) -> None:
    """Write a cohort of realistic T1 brain volumes derived from the MNI152 template.

    Each subject gets a seeded random affine + elastic deformation, tissue contrast, bias
    field, Rician noise and scanner orientation; participants.tsv records every parameter.
    """
    from tqdm.auto import tqdm

    from vae3d.sample_data import CohortSpec, write_cohort

    spec = CohortSpec(n=n, seed=seed, spacing_mm=spacing, lesion_fraction=lesion_fraction)
    with tqdm(total=n, desc="subjects", unit="vol", disable=None) as bar:
        paths = write_cohort(out, spec, progress=bar.update)
    console.print(f"wrote {len(paths)} volumes to [bold]{out}[/bold] (seed {seed}, {spacing:g} mm)")


@app.command()
def ingest(
    sources: Annotated[
        list[Path], typer.Argument(help="Folders (scanned recursively for .nii/.nii.gz) or .csv/.json lists of paths.")
    ],
    strict: Annotated[bool, typer.Option(help="Exit non-zero if any file is quarantined.")] = False,
) -> None:
    """Validate every scan, write the manifest and the quarantine report.

    Source files are opened read-only and never modified. Re-running is incremental:
    unchanged files (same size and mtime) are not re-read. Each rejected file is listed
    in quarantine.json with every reason and how to fix it.
    """
    s = settings()
    from flows.ingest import run_ingest

    manifest, quarantine = run_ingest([str(p) for p in sources], s)
    _print_ingest(manifest, quarantine, Workspace.at(s.workspace))
    if strict and quarantine.records:
        raise typer.Exit(1)


@app.command()
def preprocess() -> None:
    """Reorient, resample, crop, scale and pad every accepted volume (MONAI transforms).

    Results are cached per (scan content, settings): a re-run reads the cache, a changed
    setting (e.g. VAE3D_PREPROCESS__TARGET_SHAPE='[96,96,96]') recomputes. Writes
    dataset_index.json and figures/preprocess_montage.png.
    """
    s = settings()
    from flows.preprocess import run_preprocess

    index = run_preprocess(s)
    counts = index.counts()
    console.print(
        f"preprocessed {len(index.items)} volumes to {index.target_shape} at {index.target_spacing} mm "
        f"(train {counts['train']} / val {counts['val']} / test {counts['test']})\n"
        f"index: {Workspace.at(s.workspace).dataset_index}"
    )


@app.command()
def demo(
    n: Annotated[int, typer.Option("--n", "-n", min=4, help="Subjects in the sample cohort.")] = 24,
    seed: Annotated[int, typer.Option(help="Seed of the sample cohort.")] = 0,
) -> None:
    """Run the whole pipeline end to end on the embedded sample data.

    Writes a sample cohort derived from the MNI152 template into WORKSPACE/sample_data, then
    runs every stage on it in one process (one local Prefect server for all flows).
    """
    s = settings()
    ws = Workspace.at(s.workspace)
    data = ws.root / "sample_data"
    if not (data / "participants.tsv").exists():
        sample_data(data, n=n, seed=seed, spacing=2.0, lesion_fraction=0.0)
    from flows.demo import run_demo

    run_demo(s, data, console)


def _print_ingest(manifest, quarantine, ws: Workspace) -> None:
    counts = manifest.counts()
    table = Table(title="ingest", show_header=True)
    table.add_column("status")
    table.add_column("files", justify="right")
    table.add_row("accepted", f"{len(manifest.rows)}  (train {counts['train']} / val {counts['val']} / test {counts['test']})")
    table.add_row("quarantined", str(len(quarantine.records)))
    for code, k in quarantine.reason_counts().items():
        table.add_row(f"  {code}", str(k))
    console.print(table)
    for record in quarantine.records:
        console.print(f"[yellow]quarantined[/yellow] {record.path}")
        for reason in record.reasons:
            console.print(f"    {reason}")
    console.print(f"manifest: {ws.manifest}\nquarantine: {ws.quarantine}")


if __name__ == "__main__":  # pragma: no cover
    app()
