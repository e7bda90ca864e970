"""Local mode: Prefect's temporary server gets no flow-run heartbeats; a real server does."""

from __future__ import annotations

from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

from flows.workspace import local_prefect_mode


def test_heartbeats_are_off_only_for_runs_on_a_temporary_server():
    with temporary_settings(restore_defaults={PREFECT_API_URL}):  # no server configured
        default = get_current_settings().flows.heartbeat_frequency
        assert default is not None
        with local_prefect_mode():
            assert get_current_settings().flows.heartbeat_frequency is None
        assert get_current_settings().flows.heartbeat_frequency == default
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:4200/api"}):
        with local_prefect_mode():  # a real server watches heartbeats to find crashed runs
            assert get_current_settings().flows.heartbeat_frequency == default
