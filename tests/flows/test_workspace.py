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
    # a real server watches heartbeats to find crashed runs
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:4200/api"}), local_prefect_mode():
        assert get_current_settings().flows.heartbeat_frequency == default


def test_a_fresh_process_gives_the_temporary_server_time_to_start_on_a_loaded_machine(tmp_path):
    """Prefect's 20 s default failed ~1 CLI run in 7 at a load of 4 on 2 cores; a user's value wins."""
    import os
    import subprocess
    import sys

    code = ("from flows.workspace import Workspace, configure_environment; import sys;"
            "configure_environment(Workspace.at(sys.argv[1]));"
            "from prefect.settings import get_current_settings;"
            "print(get_current_settings().server.ephemeral.startup_timeout_seconds)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    run = lambda e: subprocess.run([sys.executable, "-c", code, str(tmp_path / "ws")], env=e,
                                   capture_output=True, text=True, timeout=120, check=True).stdout.split()[-1]
    assert float(run(env)) == 180
    assert float(run({**env, "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "45"})) == 45
