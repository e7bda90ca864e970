"""Shared fixtures: one real Prefect server for the session, tiny NIfTI factories."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """A real temporary Prefect API (SQLite) shared by every flow test in the session."""
    home = tmp_path_factory.mktemp("prefect-home")
    os.environ["PREFECT_HOME"] = str(home)
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(autouse=True)
def _restore_environ():
    """CLI commands set PREFECT_/MLFLOW_ defaults in os.environ; keep tests independent."""
    before = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(before)
