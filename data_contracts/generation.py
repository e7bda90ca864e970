"""Generation requests, the provenance sidecar of every output, and the run manifest."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from data_contracts.base import Contract
from data_contracts.schema import Schema

DEFAULT_MODEL_URI = "models:/vae3d@champion"
#: the default scale of the model's super-resolved detail (``vae3d.inference.amplify_detail``): best on validation
DETAIL_GAIN = 2.0
Mode = Literal["synthetic", "augment", "denoise", "super-resolve", "anomaly", "embed"]


class GenerationRequest(Schema):
    """What to generate. Its hash names the request; the same request is idempotent."""

    mode: Mode
    model_uri: str = Field(DEFAULT_MODEL_URI, pattern=r"^(models:/|runs:/|file:|/).+")
    seed: int = 0
    n: int = Field(0, ge=0, le=1_000_000, description="synthetic: number of volumes")
    temperature: float = Field(1.0, gt=0, le=5)
    variants: int = Field(1, ge=1, le=1000, description="augment: variants per input")
    latent_scale: float = Field(0.5, ge=0, le=10, description="augment: how far variants move from the input's "
                                "latent, in standard deviations of the model's prior along its principal directions "
                                "(posterior sigmas for a model registered without a fitted prior)")
    space: Literal["template", "input"] = Field(
        "template", description="augment: write variants on the model's grid (template) or resampled onto each "
        "input's own grid and intensity scale (input), where the user's masks and labels line up")
    artifacts: bool = Field(False, description="augment: add MONAI MRI-artifact augmentations")
    inputs: tuple[str, ...] = Field((), description="input volumes (augment/denoise/super-resolve/anomaly/embed)")
    factor: float | None = Field(
        None, ge=1, le=8, description="super-resolve: output voxels are the input's divided by this, never finer "
        "than the model's spacing; None: the model's spacing on every axis")
    fusion: bool = Field(
        True, description="combine the model's result with what the input measured. denoise: weigh the input "
        "against the model's restoration by their expected errors (the input's estimated noise, the model's "
        "validation RMSE), so a clean scan is never blurred; super-resolve: back-project, so the output averaged "
        "onto the input's voxels gives the input back")
    detail_gain: float = Field(
        DETAIL_GAIN, ge=0, le=5, description="super-resolve with fusion: the model's departure from back-projected "
        "cubic B-spline is scaled by this (the model draws fine detail too weakly); 1 keeps its own amplitude, 0 gives "
        "back-projected cubic B-spline. 2 was best on validation (vae3d.inference.amplify_detail)")
    intensity: Literal["input", "unit"] = Field(
        "input", description="denoise/super-resolve: 'input' inverts the preprocessing's percentile scaling "
        "(the input's own intensity scale), 'unit' keeps the model's [0, 1]")
    label_column: str | None = None
    batch_size: int = Field(4, ge=1, le=256)
    dtype: Literal["int16", "float32"] = Field(
        "int16", description="stored type of image outputs: int16 scaled by 1/32767 (half the bytes, "
        "steps far below the model's error) or float32; anomaly maps are always float32")
    compression: int = Field(0, ge=0, le=9, description="gzip level of output volumes: 0 stored (fastest; "
                             "deflate saves ~5% on model outputs, whose low bits are noise), 1-9 zlib deflate")

    @model_validator(mode="after")
    def _mode_fields(self) -> GenerationRequest:
        if self.mode == "synthetic" and self.n < 1:
            raise ValueError("synthetic generation needs n >= 1 (--n)")
        if self.mode != "synthetic" and not self.inputs:
            raise ValueError(f"{self.mode} needs at least one input volume")
        return self

    def parameters(self) -> dict:
        """The fields that change what is generated, besides mode, seed, inputs and model
        (``batch_size`` and ``compression`` change how, not what)."""
        return self.model_dump(mode="json", exclude={"inputs", "model_uri", "mode", "seed", "batch_size",
                                                     "compression"})

    def key(self, model: ModelRef | None = None) -> str:
        """A short hash of the request. With the pinned ``model``, its version and weights
        stand in for the URI, so the same alias after a retrain is another request."""
        doc = self.model_dump(mode="json", exclude={"batch_size", "compression"})
        if model is not None:
            doc["model_uri"] = f"{model.name}/{model.version}/{model.weights_sha256}"
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:12]


class ModelRef(Schema):
    uri: str
    name: str | None = None
    version: str | None = None
    alias: str | None = None
    run_id: str | None = None
    weights_sha256: str


class Provenance(Contract):
    """The JSON sidecar beside every output file: the BIDS derivative keys (``Description``,
    ``Sources``, ``SpatialReference``) beside the project's provenance."""

    Description: str | None = None
    Sources: tuple[str, ...] = ()
    SpatialReference: str | None = None
    output: str
    output_sha256: str
    mode: Mode
    model: ModelRef
    seed: int
    index: int = Field(description="position of this output in the request")
    parameters: dict
    input_path: str | None = None
    input_sha256: str | None = None
    package_version: str
    created: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))


class DatasetDescription(Contract):
    """``dataset_description.json`` of a BIDS derivatives folder (one per generate output folder)."""

    rebuilt_by: ClassVar[str] = "the same 'vae3d generate' command"

    Name: str
    BIDSVersion: str = "1.10.0"
    DatasetType: Literal["derivative"] = "derivative"
    GeneratedBy: tuple[dict, ...]
    SourceDatasets: tuple[dict, ...] = ()


class OutputRecord(Schema):
    path: str
    sha256: str
    sidecar: str | None = None
    input_sha256: str | None = None


class RunManifest(Contract):
    rebuilt_by: ClassVar[str] = "the same 'vae3d generate' command"

    request: GenerationRequest
    request_key: str
    model: ModelRef
    outputs: tuple[OutputRecord, ...]
    skipped_existing: int = 0
    regenerated: int = Field(0, description="outputs on disk that did not answer this request (another input, "
                             "model version or parameters, or damaged), made again")
    disambiguated: tuple[str, ...] = Field((), description="inputs whose file name another input shares: their "
                                           "outputs carry a src-<hash of the input path> entity")
    interrupted: bool = Field(False, description="the run was stopped (Ctrl-C, SIGTERM): ``outputs`` lists what "
                              "was finished; the same command completes the request")
    created: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))

