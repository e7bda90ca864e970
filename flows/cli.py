"""The ``vae3d`` command. Each subcommand builds the settings once and runs a Prefect flow.

Prefect and MLflow are imported inside the commands, after ``configure_environment`` has
pointed their state into the workspace.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import click
import typer
import typer.core
from rich.table import Table

from flows.cli_context import base_settings, console, print_error, settings, state, warn_small_splits
from flows.cli_errors import debug_requested, explain
from flows.cli_generate import MODEL, ModelOpt, generate_app
from flows.workspace import Workspace
from vae3d.seeding import derive_seed

# Typer 0.29 shows a '<bool>' value type beside every on/off flag (--help included), though a flag takes no value
_display_type = typer.core.TyperOption.display_type_rich
typer.core.TyperOption.display_type_rich = lambda self, ctx: None if self.is_flag else _display_type(self, ctx)

app = typer.Typer(
    name="vae3d",
    help=(
        "Turn folders of NIfTI MRI scans into a trained 3D VAE, then into synthetic, augmented, "
        "denoised, anomaly and embedding outputs.\n\n"
        "Stages: sample-data -> ingest -> preprocess -> train -> generate / evaluate. Every stage "
        "reads and writes validated artifacts in the workspace folder (--workspace, default "
        "./workspace); settings come from flags, VAE3D_* variables or --config.\n\n"
        "Quick start:  vae3d demo   (sample data, then every stage end to end)\n\n"
        "Schedules:    vae3d serve  (with a Prefect server; see README)\n\n"
        "Settings:     vae3d settings  (every VAE3D_* variable, its default and current value)\n\n"
        "Errors are one paragraph with the fix; --debug (or VAE3D_DEBUG=1) adds the traceback."
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
)
app.add_typer(generate_app, name="generate")


@app.callback()
def main(
    workspace: Annotated[
        Path | None,
        typer.Option("--workspace", "-w", help="Folder for everything the pipeline writes. Env: VAE3D_WORKSPACE."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="TOML or YAML file with settings (see README).")
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors (or set VAE3D_DEBUG=1).")] = False,
) -> None:
    state.workspace, state.config = workspace, config


@app.command("sample-data")
def sample_data(
    out: Annotated[Path, typer.Argument(help="Folder to write the BIDS dataset into "
                                        "(sub-XXX/anat/sub-XXX_T1w.nii.gz).")],
    n: Annotated[int, typer.Option("--n", "-n", min=1, help="Number of subjects.")] = 24,
    seed: Annotated[int, typer.Option(help="Same seed, same bytes.")] = 0,
    spacing: Annotated[float, typer.Option(help="Voxel size in mm (1.0 = the template's own grid).")] = 2.0,
    lesion_fraction: Annotated[
        float, typer.Option(min=0.0, max=1.0,
                            help="Fraction of subjects given synthetic lesions (label-lesion masks under "
                                 "derivatives/lesions/).")
    ] = 0.0,
) -> None:
    """Write a cohort of realistic T1 brain volumes derived from the MNI152 template.

    Each subject gets a seeded random affine + elastic deformation, tissue contrast, bias
    field, Rician noise and scanner orientation; participants.tsv records every parameter.
    """
    _write_sample(out, n, seed, spacing, lesion_fraction)
    if n < 20:  # the content-hash split gives val and test about 15% each by default
        console.print(f"[yellow]warning:[/yellow] {n} subjects give val and test about {0.15 * n:.0f} scans each "
                      "with the default split (fewer than 3 make their numbers noise); use --n 30 or more")


def _write_sample(out: Path, n: int, seed: int, spacing: float, lesion_fraction: float) -> None:
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
    allow_shrink: Annotated[bool, typer.Option(
        "--allow-shrink", help="Accept a manifest with fewer scans than the current one (scans removed on "
        "purpose). Without it such an ingest fails and writes nothing.")] = False,
) -> None:
    """Validate every scan, write the manifest and the quarantine report.

    Source files are opened read-only and never modified. Re-running is incremental:
    unchanged files (same size and mtime) are not re-read. Each rejected file is listed
    in quarantine.json with every reason and how to fix it.
    """
    s = settings()
    from flows.ingest import run_ingest

    manifest, quarantine = run_ingest([str(p) for p in sources], s, allow_shrink=allow_shrink)
    _print_ingest(manifest, quarantine, Workspace.at(s.workspace))
    warn_small_splits(s)
    if strict and quarantine.records:
        console.print(f"[red]error:[/red] {len(quarantine.records)} file(s) quarantined (--strict)")
        raise typer.Exit(1)


@app.command()
def preprocess(
    allow_shrink: Annotated[bool, typer.Option(
        "--allow-shrink", help="Accept a dataset index with fewer volumes than the current one from the same "
        "manifest (scans gone missing since ingest).")] = False,
) -> None:
    """Reorient, resample, crop, scale and pad every accepted volume (MONAI transforms).

    Results are cached per (scan content, settings): a re-run reads the cache, a changed
    setting (e.g. VAE3D_PREPROCESS__TARGET_SHAPE='[96,96,96]') recomputes. Writes
    dataset_index.json and figures/preprocess_montage.png.
    """
    s = settings()
    from flows.preprocess import run_preprocess

    index = run_preprocess(s, allow_shrink=allow_shrink)
    counts = index.counts()
    console.print(
        f"preprocessed {len(index.items)} volumes to {index.target_shape} at {index.target_spacing} mm "
        f"(train {counts['train']} / val {counts['val']} / test {counts['test']})\n"
        f"index: {Workspace.at(s.workspace).dataset_index}"
    )


class InitWeights(str, Enum):
    scratch = "scratch"
    pretrained = "pretrained"


@app.command()
def train(
    epochs: Annotated[int | None, typer.Option(help="Epochs (default from settings: 20).")] = None,
    max_minutes: Annotated[
        float | None, typer.Option(help="Stop after the epoch that passes this wall-clock budget.")
    ] = None,
    fresh: Annotated[bool, typer.Option(help="Ignore an interrupted run's checkpoint and start over.")] = False,
    init: Annotated[InitWeights | None, typer.Option(
        "--init", help="Starting weights: scratch (random, seeded) or pretrained (shipped with the package, "
        "default architecture at 64^3). Default from settings: scratch.")] = None,
) -> None:
    """Train the VAE on the preprocessed dataset, tracked in MLflow, and register it.

    The model learns to restore: each training input is corrupted (noise, bias field, Gibbs
    ringing, lost resolution, coarse noise; train.restoration settings) and the loss compares
    its output with the clean volume. Then a copy of it, the anomaly restorer, is fine-tuned with
    coarse noise on every input for the anomaly maps (train.anomaly: 40% of the budget).

    Every epoch is checkpointed; re-running after a crash resumes where it stopped. The new
    model version gets the alias 'candidate' and becomes 'champion' only if its validation
    SSIM beats the current champion's. Open the results with:
    mlflow ui --backend-store-uri sqlite:///WORKSPACE/mlflow/mlflow.db
    """
    base = base_settings()
    update = {k: v for k, v in {"epochs": epochs, "max_time_s": max_minutes and max_minutes * 60,
                                "init": init and init.value}.items() if v}
    s = settings(train=base.train.model_copy(update=update).model_dump()) if update else settings()
    from flows import tracking
    from flows.train import train_flow

    Workspace.at(s.workspace).require_index()  # before the flow: "ingest first" is one paragraph
    warn_small_splits(s)
    result = train_flow(s, fresh=fresh)
    best = result["best"]
    console.print(
        f"trained {result['epochs_run']} epochs: val SSIM {best.get('val_ssim', float('nan')):.3f}, "
        f"PSNR {best.get('val_psnr', float('nan')):.1f} dB\n"
        f"model version {result['version']}: {result['decision']} ({result['reason']})\n"
        f"MLflow run {result['run_id']}; open the UI with:"
    )
    console.print(tracking.mlflow_ui_command(s), soft_wrap=True, highlight=False, markup=False)


@app.command()
def demo(
    n: Annotated[int, typer.Option("--n", "-n", min=6, help="Subjects in the sample cohort.")] = 30,
    seed: Annotated[int, typer.Option(help="Seed of the sample cohort and of generation.")] = 0,
    train_minutes: Annotated[float, typer.Option(help="Training budget in minutes (CPU).")] = 4.0,
    init: Annotated[InitWeights, typer.Option(
        "--init", help="Starting weights of the demo's training: the shipped pretrained ones (a usable model in "
        "the demo's few CPU minutes) or scratch.")] = InitWeights.pretrained,
) -> None:
    """Run the whole pipeline end to end on the embedded sample data.

    Writes a sample cohort derived from the MNI152 template (plus a few subjects with
    synthetic lesions for the anomaly maps) into WORKSPACE/sample_data, then runs ingest ->
    preprocess -> train (a few minutes on CPU) -> register -> every generate mode, in one
    process with one local Prefect server.
    """
    base = base_settings()
    train_cfg = base.train
    if "max_time_s" not in train_cfg.model_fields_set:
        train_cfg = train_cfg.model_copy(update={"max_time_s": train_minutes * 60,
                                                 "epochs": max(train_cfg.epochs, 200)})
    if "patience" not in train_cfg.model_fields_set:  # the whole budget, each network its share: the coarse-noise
        # restorer's validation SSIM wanders early (patience 10 once stopped it at 18 epochs)
        train_cfg = train_cfg.model_copy(update={"patience": 10_000})
    if "init" not in train_cfg.model_fields_set:
        train_cfg = train_cfg.model_copy(update={"init": init.value})
    s = settings(train=train_cfg.model_dump())
    ws = Workspace.at(s.workspace)
    data, patients = ws.root / "sample_data" / "cohort", ws.root / "sample_data" / "patients"
    if not (data / "participants.tsv").exists():
        _write_sample(data, n=n, seed=seed, spacing=2.0, lesion_fraction=0.0)
    if not (patients / "participants.tsv").exists():
        _write_sample(patients, n=4, seed=derive_seed(seed, "patients"), spacing=2.0, lesion_fraction=1.0)
    from flows import tracking
    from flows.demo import run_demo

    run_demo(s, data, patients, console, tracking.mlflow_ui_command(s))


@app.command()
def evaluate(
    model: ModelOpt = MODEL,
    n_synthetic: Annotated[int, typer.Option(min=2, help="Synthetic samples for the synthesis metrics.")] = 8,
) -> None:
    """Evaluate a registered model on the held-out test split, against classical baselines.

    Reconstruction PSNR/SSIM; denoising at 3/5/10% Rician noise vs Gaussian smoothing and
    non-local means (tuned on validation); anomaly detection on synthetic lesions vs an
    intensity-deviation baseline; synthesis histogram distance, diversity and a memorisation
    audit. Writes WORKSPACE/evaluation/NAME-vVERSION/report.md and logs it to MLflow.
    """
    s = settings()
    from flows.evaluate import evaluate_flow, require_held_out

    require_held_out(s)  # before the flow: "ingest more scans" is one paragraph
    results = evaluate_flow(s, model, n_synthetic)
    ws = Workspace.at(s.workspace)
    m = results["model"]
    console.print(f"report: {ws.root / 'evaluation' / (m['name'] + '-v' + m['version']) / 'report.md'}")
    for target, ok in results["targets"].items():
        console.print(f"  {'[green]met[/green]' if ok else '[yellow]not met[/yellow]'}  {target}")


@app.command()
def serve(
    prefect_file: Annotated[Path | None, typer.Option(
        help="Deployments file (default: the project's prefect.yaml).")] = None,
) -> None:
    """Serve the deployments of prefect.yaml, with their cron schedules, from this process.

    Schedules need a real Prefect server (the temporary local one cannot run them):
      prefect server start                                   # terminal 1, UI on :4200
      export PREFECT_API_URL=http://127.0.0.1:4200/api       # terminal 2
      vae3d serve
    """
    import os

    s = settings()
    if not os.environ.get("PREFECT_API_URL"):
        console.print("[red]PREFECT_API_URL is not set.[/red] Start a server with 'prefect server start' and "
                      "export PREFECT_API_URL=http://127.0.0.1:4200/api first.")
        raise typer.Exit(2)
    from prefect import serve as prefect_serve

    from flows.deployments import PREFECT_YAML, deployments_from_yaml

    deployments = deployments_from_yaml(prefect_file or PREFECT_YAML, workspace=str(Workspace.at(s.workspace).root))
    console.print(f"serving {len(deployments)} deployments: " + ", ".join(d.name for d in deployments))
    prefect_serve(*deployments)


def _print_ingest(manifest, quarantine, ws: Workspace) -> None:
    counts = manifest.counts()
    table = Table(title="ingest", show_header=True)
    table.add_column("status")
    table.add_column("files", justify="right")
    table.add_row("accepted", f"{len(manifest.rows)}  (train {counts['train']} / val {counts['val']} / "
                              f"test {counts['test']})")
    table.add_row("quarantined", str(len(quarantine.records)))
    for code, k in quarantine.reason_counts().items():
        table.add_row(f"  {code}", str(k))
    console.print(table)
    for record in quarantine.records:
        console.print(f"[yellow]quarantined[/yellow] {record.path}")
        for reason in record.reasons:
            console.print(f"    {reason}")
    console.print(f"manifest: {ws.manifest}\nquarantine: {ws.quarantine}")


@app.command("settings")
def show_settings() -> None:
    """Every setting as its VAE3D_* variable with the current value (from flags, variables and
    --config), then its default and meaning; '*' marks a value that differs from the default.

    Nested settings use '__': VAE3D_TRAIN__EPOCHS=50, VAE3D_PREPROCESS__TARGET_SHAPE='[96,96,96]'.
    A config file (--config settings.toml) holds the same names in sections: [train] epochs = 50.
    """
    from flows.settings import describe_settings

    for line in describe_settings(base_settings()):
        typer.echo(line)


def _hoist_global_options(argv: list[str]) -> list[str]:
    """--workspace/-w, --config/-c and --debug also work after the subcommand: move them first."""
    takes_value = {"--workspace", "-w", "--config", "-c"}
    front, rest, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest += argv[i:]
            break
        if arg in takes_value and i + 1 < len(argv):
            front += argv[i : i + 2]
            i += 2
            continue
        if arg == "--debug" or arg.split("=", 1)[0] in ("--workspace", "--config"):
            front.append(arg)
        else:
            rest.append(arg)
        i += 1
    return front + rest


def run(argv: list[str] | None = None) -> None:
    """The ``vae3d`` entry point: the Typer app, with errors reported as one paragraph
    (``flows.cli_errors``) and the traceback only with --debug or VAE3D_DEBUG=1."""
    import sys

    args = _hoist_global_options(list(sys.argv[1:] if argv is None else argv))
    from flows import interrupts

    interrupts.install()
    try:
        code = app(args=args, prog_name="vae3d", standalone_mode=False)  # an Exit comes back as its code
    except click.exceptions.Abort as exc:  # click turns a KeyboardInterrupt into Abort
        cause = exc.__cause__ or exc.__context__
        if cause is not None and not debug_requested(args):
            message, code = explain(cause)
            print_error(message)
            sys.exit(code)
        console.print("[red]aborted[/red]")
        sys.exit(interrupts.exit_code(cause))
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (Exception, *interrupts.signals()) as exc:
        if debug_requested(args):
            raise
        message, code = explain(exc)
        print_error(message)
        sys.exit(code)
    if code == 130:  # Typer turns an interrupt into Exit(130): say so, and tell SIGTERM (143) apart
        message, code = explain(KeyboardInterrupt())
        print_error(message)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    run()
