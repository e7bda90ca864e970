"""Workspace locks between real processes (filelock: the same on Linux, macOS and Windows)."""

from __future__ import annotations

import logging
import subprocess
import sys
import time

import pytest

from flows.locks import LockTimeout, exclusive

HOLD = """
import sys, time
from pathlib import Path
from flows.locks import exclusive
with exclusive(Path(sys.argv[1]), "the test folder"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _holder(lock, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(lock), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_held_lock_times_out_with_a_message_that_names_it(tmp_path):
    lock = tmp_path / "locks" / "out.lock"
    proc = _holder(lock, 30)
    try:
        with pytest.raises(LockTimeout, match=r"output folder x is still locked by another run after 0 s"), \
                exclusive(lock, "output folder x", timeout_s=0.3, poll_s=0.05):
            pass
    finally:
        proc.kill()
        proc.wait()


def test_a_second_run_waits_says_so_and_proceeds_when_the_first_ends(tmp_path, caplog):
    lock = tmp_path / "locks" / "out.lock"
    proc = _holder(lock, 1.5)
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="flows.locks"), exclusive(lock, "output folder y", poll_s=0.05):
        waited = time.monotonic() - start
    proc.wait()
    assert waited > 0.5, "the lock was held by the other process"
    assert "another run is using output folder y" in caplog.text


def test_a_lock_left_by_a_killed_process_does_not_block(tmp_path):
    lock = tmp_path / "locks" / "out.lock"
    proc = _holder(lock, 60)
    proc.kill()
    proc.wait()
    with exclusive(lock, "output folder z", timeout_s=2):
        pass
