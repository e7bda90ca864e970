"""The one typed settings object, built once at the entry point.

Precedence, highest first: CLI flags (passed as init values), ``VAE3D_*`` environment
variables (nested with ``__``, e.g. ``VAE3D_PREPROCESS__TARGET_SHAPE='[96,96,96]'``), an
optional TOML/YAML config file (``--config``), then the defaults below.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
    YamlConfigSettingsSource,
)

from data_contracts import SplitFractions, VolumeLimits
from data_contracts.errors import PipelineError
from data_contracts.paths import PathEscape, confine
from data_contracts.schema import Schema
from vae3d.config import TrainConfig
from vae3d.device import DEVICE_HELP, DeviceName

_CONFIG_FILE: contextvars.ContextVar[Path | None] = contextvars.ContextVar("config", default=None)


class IngestSettings(VolumeLimits):
    """Contract limits (inherited) plus how sources are scanned and split."""

    exclude: tuple[str, ...] = Field(
        ("derivatives/*", "*/derivatives/*"),
        description="glob patterns (relative to a source folder) never ingested, e.g. masks",
    )
    fractions: SplitFractions = SplitFractions()
    batch_size: int = Field(8, ge=1, description="files validated per Prefect task")

    def limits(self) -> VolumeLimits:
        return VolumeLimits(**self.model_dump(include=set(VolumeLimits.model_fields)))


class PreprocessSettings(Schema):
    """Every setting that changes the preprocessed tensors (and so the cache key)."""

    target_shape: tuple[int, int, int] = (64, 64, 64)
    target_spacing: tuple[float, float, float] = (3.0, 3.0, 3.0)
    lower_percentile: float = Field(0.5, ge=0, lt=50)
    upper_percentile: float = Field(99.5, gt=50, le=100)
    foreground_threshold: float = Field(
        0.08, ge=0, lt=1, description="head mask: voxels above this fraction of the 99th percentile"
    )
    foreground_margin: int = Field(2, ge=0)

    @field_validator("target_shape")
    @classmethod
    def _positive(cls, v: tuple[int, int, int]) -> tuple[int, int, int]:
        if min(v) < 8:
            raise ValueError(f"target_shape must be >= 8 voxels per axis, got {v}")
        return v

    def key(self) -> str:
        """Stable hash of these settings: the preprocessed-cache namespace."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


class MlflowSettings(Schema):
    tracking_uri: str | None = Field(None, description="default: SQLite inside the workspace")
    experiment: str = "vae3d"
    registered_model: str = "vae3d"
    promotion_metric: str = "val_ssim"


class RegistrySettings(Schema):
    min_val_ssim: float = Field(
        0.5, ge=0, le=1, description="quality floor: a model version below this validation SSIM stays "
        "'candidate' and never becomes 'champion', even when there is no champion yet")


class PrefectSettings(Schema):
    task_runner: Literal["threads", "dask"] = "threads"
    startup_timeout_s: int = Field(
        180, ge=1, description="seconds Prefect's temporary local server may take to start (its own default, "
        "20 s, fails on a busy machine); PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS wins if set")
    max_workers: int = Field(4, ge=1)
    dask_address: str | None = Field(None, description="tcp://host:8786 of a running Dask scheduler")


class GenerateSettings(Schema):
    model_lanes: int = Field(
        0, ge=0, description="model calls run at once per process, each on 1/lanes of torch's CPU threads; "
        "0: two where torch has two or more threads, else one",
    )
    device: DeviceName = Field("auto", description=f"where generate and evaluate run the model: {DEVICE_HELP}")
    writers: int = Field(
        0, ge=0, le=64, description="threads checksumming and writing synthetic outputs per process; "
        "0: one when the model runs on the CPU (writes share its cores), else one per spare core up to 8",
    )


class Settings(BaseSettings):
    """All settings of the pipeline. Sections are handed to the stage that needs them."""

    model_config = SettingsConfigDict(
        env_prefix="VAE3D_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    workspace: Path = Field(Path("workspace"), description="everything the pipeline writes")
    seed: int = 0
    allowed_roots: tuple[Path, ...] = Field(
        (), description="folders besides the workspace that the pipeline may read scans from and write "
        "outputs to (ingest sources, generate inputs and --out); the only way to widen where it reaches"
    )
    ingest: IngestSettings = IngestSettings()
    preprocess: PreprocessSettings = PreprocessSettings()
    train: TrainConfig = TrainConfig()
    mlflow: MlflowSettings = MlflowSettings()
    registry: RegistrySettings = RegistrySettings()
    prefect: PrefectSettings = PrefectSettings()
    generate: GenerateSettings = GenerateSettings()

    @model_validator(mode="after")
    def _fits_together(self) -> Settings:
        """Constraints between sections, checked before any stage runs."""
        shape, m = self.preprocess.target_shape, self.train.model
        factor = m.patch_size * 2 ** (len(m.channels) - 1)
        if len(set(shape)) != 1 or shape[0] % factor:
            side = max(factor, round(max(shape) / factor) * factor)
            raise ValueError(
                f"preprocess.target_shape={list(shape)} does not fit the model: it must be a cube whose side is "
                f"divisible by {factor} (train.model.patch_size {m.patch_size} x 2^(levels-1), levels "
                f"{len(m.channels)}); use e.g. VAE3D_PREPROCESS__TARGET_SHAPE='[{side},{side},{side}]'")
        arch = lambda c: c.model_dump(exclude={"logvar_init"})
        if self.train.init == "pretrained" and (shape != (64, 64, 64) or arch(m) != arch(type(m)())):
            raise ValueError(
                "train.init='pretrained' needs the default train.model settings and preprocess.target_shape "
                f"[64,64,64] (got {list(shape)}); use train.init='scratch' for other models")
        return self

    def roots(self) -> tuple[Path, ...]:
        """Where the pipeline may read and write: the workspace and ``allowed_roots``. They come
        from these settings only, never from a file the pipeline reads (a manifest, a list)."""
        return (Path(self.workspace), *self.allowed_roots)

    def confine(self, path: Path | str, what: str) -> Path:
        """``path`` resolved inside ``roots()``, or a one-paragraph error (exit 2) naming the fix."""
        try:
            return confine(path, self.roots(), what=what)
        except PathEscape as exc:
            raise PipelineError(
                exc.problem, where=str(path), exit_code=2,
                fix=f"the pipeline reads and writes only inside the workspace and allowed_roots; add the folder, "
                    f"e.g. VAE3D_ALLOWED_ROOTS='[\"{Path(path).expanduser().resolve().parent}\"]' or allowed_roots "
                    "in the --config file, or move the files inside one of them") from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources = [init_settings, env_settings]
        path = _CONFIG_FILE.get()
        if path is not None:
            if path.suffix in (".yaml", ".yml"):
                sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
            else:
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


def load_settings(config: Path | None = None, **overrides) -> Settings:
    """Build the settings: ``overrides`` (CLI flags) > env > ``config`` file > defaults.

    Raises:
        FileNotFoundError: ``config`` names a missing file.
        ValueError: ``config`` is neither TOML nor YAML.
    """
    if config is not None:
        config = Path(config)
        if not config.is_file():
            raise FileNotFoundError(f"config file {config} does not exist")
        if config.suffix not in (".toml", ".yaml", ".yml"):
            raise ValueError(f"config file {config}: use a .toml, .yaml or .yml file")
    token = _CONFIG_FILE.set(config)
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    finally:
        _CONFIG_FILE.reset(token)


def setting_names(model: type[BaseModel] | None = None, prefix: str = "VAE3D_") -> dict[str, object]:
    """Every setting's environment variable name, sections included, mapped to its field."""
    model = model or Settings
    names = {}
    for name, field in model.model_fields.items():
        env = f"{prefix}{name.upper()}"
        names[env] = field
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            names.update(setting_names(sub, env + "__"))
    return names


def unknown_env_settings(environ: dict[str, str]) -> list[str]:
    """``VAE3D_*`` variables that name no setting (pydantic-settings ignores them silently),
    each with the closest valid name."""
    import difflib

    valid = set(setting_names()) | {"VAE3D_DEBUG"}
    out = []
    for key in sorted(k.upper() for k in environ if k.upper().startswith("VAE3D_")):
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1, cutoff=0.8)
            out.append(f"{key} is not a setting and is ignored" + (f"; did you mean {close[0]}?" if close else
                                                                   "; 'vae3d settings' lists them all"))
    return out


def describe_settings(current: Settings) -> list[str]:
    """One line per setting: ``VAE3D_NAME=value`` as it can be pasted into a shell, ``*`` where it
    differs from the default, then the default and the setting's meaning."""
    now_tree, default_tree = current.model_dump(mode="json"), Settings.model_construct().model_dump(mode="json")

    def lookup(tree: dict, env: str):
        for part in env.removeprefix("VAE3D_").lower().split("__"):
            tree = tree[part]
        return tree

    def shell(value) -> str:
        text = json.dumps(value, separators=(",", ":"))
        return f"'{text}'" if isinstance(value, (list, dict)) else text

    lines = []
    for env, field in setting_names().items():
        now, was = lookup(now_tree, env), lookup(default_tree, env)
        if isinstance(now, dict):
            continue  # a section: its fields follow
        meaning = f"; {field.description}" if field.description else ""
        lines.append(f"{env}={shell(now)}{' *' if now != was else ''}  # default {shell(was)}{meaning}")
    return lines
