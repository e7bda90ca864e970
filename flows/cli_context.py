"""What every ``vae3d`` command shares: the console, the global options, and the settings
built once per invocation (which also point Prefect's and MLflow's state into the workspace)."""

from __future__ import annotations

from pathlib import Path

import click
import typer
from rich.console import Console
from rich.markup import escape

from flows.allocator import tune_allocator
from flows.cli_errors import debug_requested, explain, quiet_console_tracebacks
from flows.settings import Settings, load_settings, unknown_env_settings
from flows.workspace import Workspace, configure_environment, local_prefect_mode

console = Console(stderr=True, soft_wrap=True)  # paths stay whole, as they can be pasted


class _State:
    workspace: Path | None = None
    config: Path | None = None
    warned: bool = False  # about unknown VAE3D_* variables, once per invocation


state = _State()


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
    print_error(message)
    raise typer.Exit(code)


def print_error(message: str) -> None:
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


def warn_small_splits(s: Settings) -> None:
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
