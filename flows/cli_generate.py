"""``vae3d generate MODE``: one command per generate mode, each building a request and
running the generate flow (``flows.generate``)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from data_contracts.generation import DEFAULT_MODEL_URI, DETAIL_GAIN
from flows.cli_context import console, settings
from flows.workspace import Workspace

generate_app = typer.Typer(
    help=(
        f"Generate outputs from a registered model (default {DEFAULT_MODEL_URI}).\n\n"
        "Every output gets a JSON provenance sidecar; every run writes run_manifest.json. "
        "Re-running the same request skips complete outputs, so an interrupted run finishes "
        "without duplicates."
    ),
    no_args_is_help=True,
)

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="models:/NAME@ALIAS or models:/NAME/VERSION.")]
MODEL = DEFAULT_MODEL_URI
OutOpt = Annotated[Path | None, typer.Option(
    "--out", "-o", help="Output folder (default: WORKSPACE/outputs/MODE/REQUEST).")]
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


class Space(str, Enum):
    template = "template"
    input = "input"


IntensityOpt = Annotated[IntensityScale, typer.Option(
    "--intensity", help="input: the input's own intensity scale (the preprocessing's percentile scaling "
    "inverted); unit: the model's [0, 1].")]
InputsArg = Annotated[list[Path], typer.Argument(help="Volumes: files, folders, or .csv/.json lists.")]


def _generate(mode: str, out: Path | None, inputs: list[Path] | None = None, label_column: str | None = None,
              **fields) -> None:
    s = settings()
    from data_contracts.generation import GenerationRequest
    from flows.generate import run_generate
    from vae3d.ingest import discover, read_labels

    for source in inputs or ():
        s.confine(source, what="generate input")
    found, refused = discover(inputs, s.ingest.exclude, s.roots()) if inputs else ([], [])
    if refused:
        for _, code, why in refused:
            console.print(f"[red]refused[/red] {code}: {why}")
        raise typer.Exit(2)
    paths = tuple(str(p) for p in found)
    labels = read_labels(inputs or [], label_column) if label_column else Workspace.at(s.workspace).split_labels()
    try:
        request = GenerationRequest(mode=mode, inputs=paths, label_column=label_column, **fields)
    except ValueError as exc:
        console.print(f"[red]Invalid request:[/red] {exc}")
        raise typer.Exit(2) from None
    manifest = run_generate(request, s, str(out) if out else None, labels)
    where = Path(manifest.outputs[0].path).parent if manifest.outputs else out
    notes = [f"{manifest.skipped_existing} already complete"]
    if manifest.regenerated:
        notes.append(f"{manifest.regenerated} made again: they answered another request")
    if manifest.disambiguated:
        notes.append(f"{len(manifest.disambiguated)} named with a src- entity: same file name")
    console.print(
        f"{mode}: {len(manifest.outputs)} outputs ({', '.join(notes)}) "
        f"from {manifest.model.name} v{manifest.model.version}\n"
        f"folder: {where}\nrun manifest: {where}/run_manifest.json"
    )


@generate_app.command("synthetic")
def gen_synthetic(
    n: Annotated[int, typer.Option("--n", "-n", min=1, help="Number of volumes.")] = 8,
    seed: SeedOpt = 0,
    temperature: Annotated[float, typer.Option(
        help="Multiplies the prior's registered spread (train.prior.spread); < 1 gives typical, > 1 diverse "
             "volumes.")] = 1.0,
    model: ModelOpt = MODEL,
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
    latent_scale: Annotated[float, typer.Option(
        help="How far variants move from the input's latent, in standard deviations of the model's prior along "
             "its principal directions (posterior sigmas for a model without a fitted prior).")] = 0.5,
    space: Annotated[Space, typer.Option(
        help="template: variants on the model's grid; input: on each input's own grid and intensity scale, so "
             "its masks and labels still line up.")] = Space.template,
    artifacts: Annotated[bool, typer.Option(
        help="Add MONAI MRI-artifact augmentations (bias field, Gibbs, noise).")] = False,
    seed: SeedOpt = 0,
    model: ModelOpt = MODEL,
    out: OutOpt = None,
    batch_size: BatchOpt = 4,
    dtype: DtypeOpt = StoredType.int16,
    compression: CompressionOpt = 0,
) -> None:
    """K variants of each input volume, its latent moved along the model's prior (the anatomy its
    training scans vary in), optionally with MRI artifacts; on the model's grid or the input's."""
    _generate("augment", out, inputs, variants=variants, latent_scale=latent_scale, artifacts=artifacts,
              space=space.value, seed=seed, model_uri=model, batch_size=batch_size, dtype=dtype.value,
              compression=compression)


@generate_app.command("denoise")
def gen_denoise(inputs: InputsArg, model: ModelOpt = MODEL, out: OutOpt = None,
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
    factor: Annotated[float | None, typer.Option(
        "--factor", "-f", min=1.0, max=8.0,
        help="Divide the input's voxel size by F on every axis (never finer than the model's spacing). "
             "Default: the model's spacing on every axis, e.g. a 3x3x6 mm thick-slice scan becomes 3 mm "
             "isotropic.")] = None,
    model: ModelOpt = MODEL,
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
             "back-projected cubic B-spline.")] = DETAIL_GAIN,
) -> None:
    """Low-resolution or thick-slice scans restored at finer voxels, with the input's field of view and orientation.

    By default the model's output is made consistent with the input (iterative back-projection).

    Example:  vae3d generate super-resolve scans/thick/ --factor 2
    """
    _generate("super-resolve", out, inputs, factor=factor, model_uri=model, batch_size=batch_size,
              dtype=dtype.value, compression=compression, intensity=intensity.value, fusion=fusion,
              detail_gain=detail_gain)


@generate_app.command("anomaly")
def gen_anomaly(inputs: InputsArg, model: ModelOpt = MODEL, out: OutOpt = None,
                batch_size: BatchOpt = 4, compression: CompressionOpt = 0) -> None:
    """Voxel-wise anomaly maps on each input's grid, and a per-volume score in the sidecar.

    Scores are compared with the threshold calibrated on the healthy validation split when
    the model was registered ('flagged' in the sidecar): by default it flags at most 5% of
    healthy scans with 90% confidence (train.anomaly.false_positive_rate and fpr_confidence,
    recorded in each sidecar). Maps are stored as float32.
    """
    _generate("anomaly", out, inputs, model_uri=model, batch_size=batch_size, compression=compression)


@generate_app.command("embed")
def gen_embed(
    inputs: InputsArg,
    label_column: Annotated[str | None, typer.Option(
        help="Colour the PCA plot by this column of a CSV input list.")] = None,
    model: ModelOpt = MODEL,
    out: OutOpt = None,
    batch_size: BatchOpt = 8,
) -> None:
    """Latent means of every volume to embeddings.parquet, plus a PCA plot (coloured by split or label)."""
    _generate("embed", out, inputs, label_column=label_column, model_uri=model, batch_size=batch_size)
