"""How the CLI reports a failure: one short paragraph (what went wrong, the file or
setting, the fix) and an exit code. The traceback only with ``--debug`` or ``VAE3D_DEBUG=1``.

Prefect logs every failed flow and task run with its traceback; outside debug mode the
console handler prints those records without it (the Prefect API, and so the UI of a
real server, still gets the whole record).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

DEBUG_ENV = "VAE3D_DEBUG"
_PREFECT_STARTUP = "Timed out while attempting to connect to ephemeral Prefect API server"


def debug_requested(argv: Sequence[str]) -> bool:
    return "--debug" in argv or os.environ.get(DEBUG_ENV, "").lower() in ("1", "true", "yes")


def explain(exc: BaseException) -> tuple[str, int]:
    """(paragraph, exit code) for an exception that reached the CLI."""
    from pydantic import ValidationError

    from data_contracts import ContractViolation, PipelineError
    from flows import interrupts

    if isinstance(exc, interrupts.signals()):
        return ("interrupted; re-run the same command to finish the job (complete outputs are kept, and a "
                "generate run's run_manifest.json lists them)"), interrupts.exit_code(exc)
    if isinstance(exc, PipelineError):
        where = f"\n  where: {exc.where}" if exc.where else ""
        return f"{exc.what}{where}\n  fix: {exc.fix}", exc.exit_code
    if isinstance(exc, ContractViolation):
        reasons = "\n  ".join(str(r) for r in exc.reasons)
        return f"{exc.path} breaks the NIfTI contract:\n  {reasons}", 2
    if isinstance(exc, ValidationError):
        return "invalid settings:\n  " + "\n  ".join(_setting_error(e) for e in exc.errors()) + (
            "\n  fix: correct the flag, VAE3D_* variable or --config entry; 'vae3d settings' lists them all"), 2
    if isinstance(exc, RuntimeError) and _PREFECT_STARTUP in str(exc):
        timeout = os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "?")
        return (f"Prefect's temporary local server did not start within {timeout} s (the machine is busy)\n"
                "  fix: raise VAE3D_PREFECT__STARTUP_TIMEOUT_S, or start one server for all runs: "
                "'prefect server start', then export PREFECT_API_URL=http://127.0.0.1:4200/api"), 1
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)):
        return f"{exc}\n  fix: check the path and its permissions", 1
    return (f"unexpected error: {type(exc).__name__}: {_first_line(exc)}\n"
            f"  re-run with --debug (or {DEBUG_ENV}=1) for the traceback, and report it if it is a bug"), 1


def _setting_error(e: dict) -> str:
    loc = ".".join(str(p) for p in e.get("loc", ()))
    msg = str(e.get("msg", "")).removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else ""


class _WithoutTraceback(logging.Formatter):
    """Formats a record as ``inner`` does, leaving out its traceback and stack."""

    def __init__(self, inner: logging.Formatter):
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


def quiet_console_tracebacks() -> None:
    """Console log lines without tracebacks (call once Prefect has set up its logging)."""
    from prefect.logging.configuration import ensure_logging_setup

    ensure_logging_setup()  # Prefect configures its handlers lazily; wrap them once they exist
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler.formatter, _WithoutTraceback):
            handler.setFormatter(_WithoutTraceback(handler.formatter or logging.Formatter()))
