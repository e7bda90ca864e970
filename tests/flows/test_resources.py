"""The process-wide model thread and writer: one model thread, bounded pending writes."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from flows import resources


def test_model_calls_from_many_threads_run_on_one_thread():
    with ThreadPoolExecutor(4) as pool:
        names = set(pool.map(lambda _: resources.model_call(lambda: threading.current_thread().name), range(16)))
    assert len(names) == 1 and names.pop().startswith("vae3d-model")
    with pytest.raises(ZeroDivisionError):
        resources.model_call(lambda: 1 / 0)


def test_pending_writes_are_bounded_and_slots_come_back_after_failures():
    gate = threading.Event()
    futures = [resources.submit_write(gate.wait, 10) for _ in range(resources.WRITE_SLOTS)]
    blocked = threading.Thread(target=lambda: futures.append(resources.submit_write(lambda: "late")))
    blocked.start()
    time.sleep(0.3)
    assert blocked.is_alive()  # every slot is taken: the producer waits instead of piling up
    gate.set()
    blocked.join(5)
    assert not blocked.is_alive() and futures[-1].result(5) == "late"
    failing = resources.submit_write(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        failing.result(5)
    # all slots are free again: as many writes as slots are accepted at once
    done = [resources.submit_write(lambda: None) for _ in range(resources.WRITE_SLOTS)]
    assert all(f.result(5) is None for f in done)
