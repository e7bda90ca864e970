"""The workspace folder: where every artifact of the pipeline lives, and nothing outside it.

``configure_environment`` points Prefect's and MLflow's local state into the workspace and
turns their telemetry off; the CLI calls it before Prefect is first imported.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from data_contracts import PipelineError


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def at(cls, root: Path | str) -> Workspace:
        return cls(Path(root).expanduser().resolve())

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine.json"

    @property
    def dataset_index(self) -> Path:
        return self.root / "dataset_index.json"

    def preprocess_cache(self, key: str) -> Path:
        return self.root / "cache" / "preprocess" / key

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def mlflow_dir(self) -> Path:
        return self.root / "mlflow"

    @property
    def outputs(self) -> Path:
        return self.root / "outputs"

    @property
    def locks(self) -> Path:
        return self.root / "locks"

    @property
    def prefect_home(self) -> Path:
        return self.root / "prefect"

    def require_manifest(self) -> Path:
        """The manifest, or an error that names the first step: ingest."""
        if not self.manifest.exists():
            raise PipelineError(f"workspace {self.root} holds no dataset yet", where=str(self.manifest),
                                fix="ingest your scans first: vae3d ingest FOLDER (or vae3d demo for sample data)")
        return self.manifest

    def require_index(self) -> Path:
        """The dataset index, or an error that names the missing step (ingest or preprocess)."""
        self.require_manifest()
        if not self.dataset_index.exists():
            raise PipelineError(f"workspace {self.root} has ingested scans but no preprocessed dataset",
                                where=str(self.dataset_index), fix="run vae3d preprocess, then this command again")
        return self.dataset_index

    def split_labels(self) -> dict[str, str]:
        """Each ingested scan's split (train/val/test) by its content sha256: the default labels of
        ``generate embed``; empty before the first ingest."""
        if not self.manifest.exists():
            return {}
        from data_contracts import Manifest

        return {r.header.sha256: r.split for r in Manifest.read(self.manifest).rows}

    def ensure(self) -> Workspace:
        self.root.mkdir(parents=True, exist_ok=True)
        return self


def configure_environment(ws: Workspace, startup_timeout_s: int = 180) -> None:
    """Keep Prefect and MLflow state inside the workspace, offline. User-set values win.
    ``startup_timeout_s``: how long Prefect's temporary server may take to start."""
    ws.ensure()
    defaults = {
        "PREFECT_HOME": str(ws.prefect_home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": os.environ.get("PREFECT_UI_ENABLED", "false"),
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        # the temporary server's 20 s default fails about 1 run in 7 on a loaded 2-core machine
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": str(int(startup_timeout_s)),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        # bounded retries with backoff against a tracking server, then a clear error
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
        "DO_NOT_TRACK": "1",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)


LIBRARY_LOGGERS = "vae3d,flows"


def route_library_logs(names: str = LIBRARY_LOGGERS) -> None:
    """Send the library's log lines of flow and task runs to the Prefect API (the UI shows them
    beside the flow's own), once per process, at INFO; each flow calls it. Prefect's own
    ``PREFECT_LOGGING_EXTRA_LOGGERS`` would do this at its first import, but would also warn for
    every line logged outside a run (the library called on its own); those stay local here."""
    import logging

    from prefect.context import FlowRunContext, TaskRunContext
    from prefect.logging.handlers import APILogHandler

    class _InRun(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return FlowRunContext.get() is not None or TaskRunContext.get() is not None

    for name in names.split(","):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)
        if not any(isinstance(h, APILogHandler) for h in logger.handlers):
            handler = APILogHandler()
            handler.addFilter(_InRun())
            logger.addHandler(handler)


@contextmanager
def local_prefect_mode() -> Iterator[None]:
    """Without ``PREFECT_API_URL``, flow runs go to a temporary server that lives and dies
    with this process: there, flow-run heartbeats (a server's way to mark runs whose process
    crashed) have no one to watch them, and stopping each run's heartbeat thread costs up
    to a second. Turn them off for such runs; against a real server they stay on."""
    from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    if PREFECT_API_URL.value():
        yield
        return
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield
