"""The ``vae3d`` command. Each subcommand builds the settings once and runs a Prefect flow.

Prefect and MLflow are imported inside the commands, after ``configure_environment`` has
pointed their state into the workspace.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import click
import typer
import typer.core
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from flows.allocator import tune_allocator
from flows.cli_errors import debug_requested, explain, quiet_console_tracebacks
from flows.settings import Settings, load_settings, unknown_env_settings
from flows.workspace import Workspace, configure_environment, local_prefect_mode

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
console = Console(stderr=True, soft_wrap=True)  # paths stay whole, as they can be pasted


class _State:
    workspace: Optional[Path] = None
    config: Optional[Path] = None
    warned: bool = False  # about unknown VAE3D_* variables, once per invocation


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
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors (or set VAE3D_DEBUG=1).")] = False,
) -> None:
    state.workspace, state.config = workspace, config


def base_settings(**overrides) -> Settings:
    """The settings from --config, VAE3D_* variables and ``overrides``; an error becomes one paragraph."""
    import os

    from pydantic import ValidationError

    if not state.warned:
        state.warned = True
        for warning in unknown_env_settings(dict(os.environ)):
            console.print("[yellow]warning:[/yellow] " + escape(warning), soft_wrap=True, highlight=False)
    try:
        return load_settings(state.config, workspace=state.workspace, **overrides)
    except ValidationError as exc:
        message, code = explain(exc)
    except (ValueError, FileNotFoundError) as exc:  # the --config file itself
        message, code = f"{exc}\n  fix: pass an existing .toml or .yaml file to --config", 2
    _print_error(message)
    raise typer.Exit(code)


def _print_error(message: str) -> None:
    console.print("[red]error:[/red] " + escape(message), highlight=False)


def settings(**overrides) -> Settings:
    """The settings for this invocation; also points Prefect/MLflow state into the workspace."""
    import sys

    s = base_settings(**overrides)
    configure_environment(Workspace.at(s.workspace), startup_timeout_s=s.prefect.startup_timeout_s)
    from flows.interrupts import detach_temporary_server

    detach_temporary_server()  # a Ctrl-C reaches this process, not the server first
    if not debug_requested(sys.argv):
        quiet_console_tracebacks()
    tune_allocator()
    ctx = click.get_current_context(silent=True)
    if ctx is not None:  # until the command ends
        ctx.with_resource(local_prefect_mode())
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
    _warn_small_splits(s)
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
    epochs: Annotated[Optional[int], typer.Option(help="Epochs (default from settings: 20).")] = None,
    max_minutes: Annotated[
        Optional[float], typer.Option(help="Stop after the epoch that passes this wall-clock budget.")
    ] = None,
    fresh: Annotated[bool, typer.Option(help="Ignore an interrupted run's checkpoint and start over.")] = False,
    init: Annotated[Optional[InitWeights], typer.Option(
        "--init", help="Starting weights: scratch (random, seeded) or pretrained (shipped with the package, "
        "default architecture at 64^3). Default from settings: scratch.")] = None,
) -> None:
    """Train the VAE on the preprocessed dataset, tracked in MLflow, and register it.

    The model learns to restore: each training input is corrupted (noise, bias field, Gibbs
    ringing, lost resolution, coarse noise; train.restoration settings) and the loss compares
    its output with the clean volume.

    Every epoch is checkpointed; re-running after a crash resumes where it stopped. The new
    model version gets the alias 'candidate' and becomes 'champion' only if its validation
    SSIM beats the current champion's. Open the results with:
    mlflow ui --backend-store-uri sqlite:///WORKSPACE/mlflow/mlflow.db
    """
    base = base_settings()
    update = {k: v for k, v in {"epochs": epochs, "max_time_s": max_minutes and max_minutes * 60,
                                "init": init and init.value}.items() if v}
    s = settings(train=base.train.model_copy(update=update).model_dump()) if update else settings()
    from flows.train import train_flow

    Workspace.at(s.workspace).require_index()  # before the flow: "ingest first" is one paragraph
    _warn_small_splits(s)
    result = train_flow(s, fresh=fresh)
    best = result["best"]
    console.print(
        f"trained {result['epochs_run']} epochs: val SSIM {best.get('val_ssim', float('nan')):.3f}, "
        f"PSNR {best.get('val_psnr', float('nan')):.1f} dB\n"
        f"model version {result['version']}: {result['decision']} ({result['reason']})\n"
        f"MLflow run {result['run_id']}; open the UI with:"
    )
    console.print(mlflow_ui_command(s), soft_wrap=True, highlight=False, markup=False)


def mlflow_ui_command(s: Settings) -> str:
    """The command that opens this workspace's MLflow UI, as it can be pasted: the mlflow
    of this environment (a venv's bin is not on PATH after ``make demo``), quoted."""
    import shlex
    import shutil
    import sys

    ws = Workspace.at(s.workspace)
    uri = s.mlflow.tracking_uri or f"sqlite:///{ws.mlflow_dir / 'mlflow.db'}"
    local = Path(sys.executable).parent / "mlflow"
    exe = "mlflow" if shutil.which("mlflow") == str(local) or not local.exists() else str(local)
    return f"{shlex.quote(exe)} ui --backend-store-uri {shlex.quote(uri)} --host 127.0.0.1"


def _warn_small_splits(s: Settings) -> None:
    """Fewer than 3 scans in val or test make its numbers (and the champion choice) noise."""
    ws = Workspace.at(s.workspace)
    if not ws.dataset_index.exists() and not ws.manifest.exists():
        return
    from data_contracts import DatasetIndex, Manifest

    counts = (DatasetIndex.read(ws.dataset_index) if ws.dataset_index.exists() else Manifest.read(ws.manifest)).counts()
    small = [f"{split} has {counts[split]}" for split in ("val", "test") if counts[split] < 3]
    if small:
        console.print(f"[yellow]warning:[/yellow] {' and '.join(small)} scan(s) (< 3): validation decides the "
                      "champion and test the reported quality, so their numbers are noise; ingest more scans "
                      "(30 give about 4 each with the default split)", soft_wrap=True, highlight=False)


generate_app = typer.Typer(
    help=(
        "Generate outputs from a registered model (default models:/vae3d@champion).\n\n"
        "Every output gets a JSON provenance sidecar; every run writes run_manifest.json. "
        "Re-running the same request skips complete outputs, so an interrupted run finishes "
        "without duplicates."
    ),
    no_args_is_help=True,
)
app.add_typer(generate_app, name="generate")

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="models:/NAME@ALIAS or models:/NAME/VERSION.")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder (default: WORKSPACE/outputs/MODE/REQUEST).")]
SeedOpt = Annotated[int, typer.Option(help="Seed; the same seed gives byte-identical volumes.")]
BatchOpt = Annotated[int, typer.Option(min=1, help="Volumes per model call (batch).")]


class StoredType(str, Enum):
    int16 = "int16"
    float32 = "float32"


DtypeOpt = Annotated[StoredType, typer.Option(
    "--dtype", help="Stored type: int16 scaled by 1/32767 (half the bytes; what scanners write) or float32.")]
CompressionOpt = Annotated[int, typer.Option(
    "--compression", min=0, max=9,
    help="gzip level: 0 stores uncompressed blocks (fastest); 1-9 deflate (about 5% smaller on model outputs, "
         "whose low bits are noise, and much slower to write).")]
class IntensityScale(str, Enum):
    input = "input"
    unit = "unit"


IntensityOpt = Annotated[IntensityScale, typer.Option(
    "--intensity", help="input: the input's own intensity scale (the preprocessing's percentile scaling "
    "inverted); unit: the model's [0, 1].")]
InputsArg = Annotated[list[Path], typer.Argument(help="Volumes: files, folders, or .csv/.json lists.")]


def _generate(mode: str, out: Optional[Path], inputs: list[Path] | None = None, label_column: str | None = None,
              **fields) -> None:
    s = settings()
    from data_contracts.generation import GenerationRequest
    from flows.generate import run_generate
    from vae3d.ingest import discover

    for source in inputs or ():
        s.confine(source, what="generate input")
    found, refused = discover(inputs, s.ingest.exclude, s.roots()) if inputs else ([], [])
    if refused:
        for _, code, why in refused:
            console.print(f"[red]refused[/red] {code}: {why}")
        raise typer.Exit(2)
    paths = tuple(str(p) for p in found)
    labels = _labels(inputs or [], label_column) if label_column else _split_labels(s)
    try:
        request = GenerationRequest(mode=mode, inputs=paths, label_column=label_column, **fields)
    except ValueError as exc:
        console.print(f"[red]Invalid request:[/red] {exc}")
        raise typer.Exit(2) from None
    manifest = run_generate(request, s, str(out) if out else None, labels)
    where = Path(manifest.outputs[0].path).parent if manifest.outputs else out
    console.print(
        f"{mode}: {len(manifest.outputs)} outputs ({manifest.skipped_existing} already complete"
        f"{f', {manifest.regenerated} made again: they answered another request' if manifest.regenerated else ''}"
        f"{f', {len(manifest.disambiguated)} named with a src- entity: same file name' if manifest.disambiguated else ''}) "
        f"from {manifest.model.name} v{manifest.model.version}\n"
        f"folder: {where}\nrun manifest: {where}/run_manifest.json"
    )


def _labels(sources: list[Path], column: str) -> dict[str, str]:
    import csv

    labels: dict[str, str] = {}
    for src in sources:
        if src.suffix.lower() != ".csv":
            continue
        with open(src, newline="") as fh:
            for row in csv.DictReader(fh):
                if column not in row:
                    raise typer.BadParameter(f"{src} has no column {column!r}")
                path = Path(row.get("path", "")).expanduser()
                labels[str((src.parent / path).resolve())] = row[column]
    return labels


def _split_labels(s: Settings) -> dict[str, str]:
    ws = Workspace.at(s.workspace)
    if not ws.manifest.exists():
        return {}
    from data_contracts import Manifest

    return {r.header.sha256: r.split for r in Manifest.read(ws.manifest).rows}


@generate_app.command("synthetic")
def gen_synthetic(
    n: Annotated[int, typer.Option("--n", "-n", min=1, help="Number of volumes.")] = 8,
    seed: SeedOpt = 0,
    temperature: Annotated[float, typer.Option(help="Prior scale; < 1 gives typical, > 1 diverse volumes.")] = 1.0,
    model: ModelOpt = "models:/vae3d@champion",
    out: OutOpt = None,
    batch_size: BatchOpt = 4,
    dtype: DtypeOpt = StoredType.int16,
    compression: CompressionOpt = 0,
) -> None:
    """N new volumes sampled from the prior, in the training template space."""
    _generate("synthetic", out, n=n, seed=seed, temperature=temperature, model_uri=model, batch_size=batch_size,
              dtype=dtype.value, compression=compression)


@generate_app.command("augment")
def gen_augment(
    inputs: InputsArg,
    variants: Annotated[int, typer.Option("--variants", "-k", min=1, help="Variants per input.")] = 4,
    latent_scale: Annotated[float, typer.Option(help="Latent perturbation in posterior sigmas (1 = posterior sample).")] = 0.5,
    artifacts: Annotated[bool, typer.Option(help="Add MONAI MRI-artifact augmentations (bias field, Gibbs, noise).")] = False,
    seed: SeedOpt = 0,
    model: ModelOpt = "models:/vae3d@champion",
    out: OutOpt = None,
    batch_size: BatchOpt = 4,
    dtype: DtypeOpt = StoredType.int16,
    compression: CompressionOpt = 0,
) -> None:
    """K latent-space variants of each input volume."""
    _generate("augment", out, inputs, variants=variants, latent_scale=latent_scale, artifacts=artifacts,
              seed=seed, model_uri=model, batch_size=batch_size, dtype=dtype.value, compression=compression)


@generate_app.command("denoise")
def gen_denoise(inputs: InputsArg, model: ModelOpt = "models:/vae3d@champion", out: OutOpt = None,
                batch_size: BatchOpt = 4, dtype: DtypeOpt = StoredType.int16, compression: CompressionOpt = 0,
                intensity: IntensityOpt = IntensityScale.input,
                fusion: Annotated[bool, typer.Option(
                    "--fusion/--no-fusion", help="Weigh the input against the model's restoration by their expected "
                    "errors (the input's estimated noise, the model's validation RMSE); --no-fusion: the model "
                    "alone.")] = True) -> None:
    """Restored (denoised, bias- and ringing-corrected) volumes on each input's own grid and intensity scale.

    The model was trained to map corrupted scans (noise, bias field, Gibbs ringing, lost
    resolution) back to clean ones; the output has the input's shape and affine. By default
    the output weighs the input and the model's restoration by their expected errors, so a
    clean scan comes back nearly unchanged and a noisy one mostly restored.
    """
    _generate("denoise", out, inputs, model_uri=model, batch_size=batch_size, dtype=dtype.value,
              compression=compression, intensity=intensity.value, fusion=fusion)


@generate_app.command("super-resolve")
def gen_super_resolve(
    inputs: InputsArg,
    factor: Annotated[Optional[float], typer.Option(
        "--factor", "-f", min=1.0, max=8.0,
        help="Divide the input's voxel size by F on every axis (never finer than the model's spacing). "
             "Default: the model's spacing on every axis, e.g. a 3x3x6 mm thick-slice scan becomes 3 mm isotropic.")] = None,
    model: ModelOpt = "models:/vae3d@champion",
    out: OutOpt = None,
    batch_size: BatchOpt = 4,
    dtype: DtypeOpt = StoredType.int16,
    compression: CompressionOpt = 0,
    intensity: IntensityOpt = IntensityScale.input,
    fusion: Annotated[bool, typer.Option(
        "--fusion/--no-fusion", help="Back-project onto the input, so the output averaged over each input voxel "
        "gives that voxel back (the model adds detail, the input keeps its content); --no-fusion: the model "
        "alone.")] = True,
    detail_gain: Annotated[float, typer.Option(
        "--detail-gain", min=0.0, max=5.0,
        help="With fusion: scale the model's fine detail (its departure from back-projected cubic B-spline) by "
             "this. The model draws detail too weakly; 2 was best on validation, 1 keeps its own, 0 gives "
             "back-projected cubic B-spline.")] = 2.0,
) -> None:
    """Low-resolution or thick-slice scans restored at finer voxels, with the input's field of view and orientation.

    By default the model's output is made consistent with the input (iterative back-projection).

    Example:  vae3d generate super-resolve scans/thick/ --factor 2
    """
    _generate("super-resolve", out, inputs, factor=factor, model_uri=model, batch_size=batch_size,
              dtype=dtype.value, compression=compression, intensity=intensity.value, fusion=fusion,
              detail_gain=detail_gain)


@generate_app.command("anomaly")
def gen_anomaly(inputs: InputsArg, model: ModelOpt = "models:/vae3d@champion", out: OutOpt = None,
                batch_size: BatchOpt = 4, compression: CompressionOpt = 0) -> None:
    """Voxel-wise anomaly maps on each input's grid, and a per-volume score in the sidecar.

    Scores are compared with the threshold calibrated on the healthy validation split when
    the model was registered ('flagged' in the sidecar). Maps are stored as float32.
    """
    _generate("anomaly", out, inputs, model_uri=model, batch_size=batch_size, compression=compression)


@generate_app.command("embed")
def gen_embed(
    inputs: InputsArg,
    label_column: Annotated[Optional[str], typer.Option(help="Colour the PCA plot by this column of a CSV input list.")] = None,
    model: ModelOpt = "models:/vae3d@champion",
    out: OutOpt = None,
    batch_size: BatchOpt = 8,
) -> None:
    """Latent means of every volume to embeddings.parquet, plus a PCA plot (coloured by split or label)."""
    _generate("embed", out, inputs, label_column=label_column, model_uri=model, batch_size=batch_size)


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
        train_cfg = train_cfg.model_copy(update={"max_time_s": train_minutes * 60, "epochs": max(train_cfg.epochs, 200)})
    if "init" not in train_cfg.model_fields_set:
        train_cfg = train_cfg.model_copy(update={"init": init.value})
    s = settings(train=train_cfg.model_dump())
    ws = Workspace.at(s.workspace)
    data, patients = ws.root / "sample_data" / "cohort", ws.root / "sample_data" / "patients"
    if not (data / "participants.tsv").exists():
        _write_sample(data, n=n, seed=seed, spacing=2.0, lesion_fraction=0.0)
    if not (patients / "participants.tsv").exists():
        _write_sample(patients, n=4, seed=seed + 1000, spacing=2.0, lesion_fraction=1.0)
    from flows.demo import run_demo

    run_demo(s, data, patients, console, mlflow_ui_command(s))


@app.command()
def evaluate(
    model: ModelOpt = "models:/vae3d@champion",
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
    prefect_file: Annotated[Optional[Path], typer.Option(help="Deployments file (default: the project's prefect.yaml).")] = None,
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


@app.command("settings")
def show_settings() -> None:
    """Every setting as its VAE3D_* variable with the current value (from flags, variables and
    --config), then its default and meaning; '*' marks a value that differs from the default.

    Nested settings use '__': VAE3D_TRAIN__EPOCHS=50, VAE3D_PREPROCESS__TARGET_SHAPE='[96,96,96]'.
    A config file (--config settings.toml) holds the same names in sections: [train] epochs = 50.
    """
    import json

    from flows.settings import setting_names

    current, default = base_settings().model_dump(mode="json"), Settings.model_construct().model_dump(mode="json")

    def lookup(tree: dict, env: str):
        for part in env.removeprefix("VAE3D_").lower().split("__"):
            tree = tree[part]
        return tree

    def shell(value) -> str:  # as it can be pasted into a shell
        text = json.dumps(value, separators=(",", ":"))
        return f"'{text}'" if isinstance(value, (list, dict)) else text

    for env, field in setting_names().items():
        now, was = lookup(current, env), lookup(default, env)
        if isinstance(now, dict):
            continue  # a section: its fields follow
        meaning = f"; {field.description}" if field.description else ""
        typer.echo(f"{env}={shell(now)}{' *' if now != was else ''}  # default {shell(was)}{meaning}")


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
            _print_error(message)
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
        _print_error(message)
        sys.exit(code)
    if code == 130:  # Typer turns an interrupt into Exit(130): say so, and tell SIGTERM (143) apart
        message, code = explain(KeyboardInterrupt())
        _print_error(message)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    run()
