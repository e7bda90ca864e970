"""The allocator setting: freed tensor memory is reused instead of faulted in again.

Each case runs in a fresh interpreter, since the setting is process-wide and one-way.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="tunes glibc's malloc")

# a thread that takes and frees 48 MB in 8 MB blocks six times, as a decoder's lane does
# with its activations; the page faults of the last four rounds are what comes back
SCRIPT = textwrap.dedent("""
    import json, resource, sys, threading
    import numpy as np
    from flows import allocator, resources

    if sys.argv[1] == "lane":
        resources.model_call(lambda: None)
    out = {"tuned": allocator._state.get("tuned")}

    def work():
        for r in range(6):
            if r == 2:
                start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            blocks = [np.ones(1 << 20) for _ in range(6)]
            del blocks
        out["faults"] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    print(json.dumps(out))
""")


def _run(mode: str, **env) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    p = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True,
                       env={**clean, **env})
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_the_first_model_lane_sets_the_allocator_and_freed_blocks_are_reused():
    plain, laned = _run("none"), _run("lane")
    assert plain["tuned"] is None and laned["tuned"] is True
    # glibc's defaults give the 8 MB blocks back and fault them in again every round (a
    # thousand faults and more); with the thresholds set, the thread reuses its own memory
    assert plain["faults"] > 1000
    assert laned["faults"] < plain["faults"] / 10


def test_a_users_own_malloc_settings_are_left_alone():
    assert _run("lane", MALLOC_TRIM_THRESHOLD_="1000000")["tuned"] is False
    assert _run("lane", GLIBC_TUNABLES="glibc.malloc.trim_threshold=1000000")["tuned"] is False
