"""The process-wide model lanes and writer: bounded work in flight, OpenMP limits per lane."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from flows import resources


def test_model_calls_from_many_threads_run_on_the_lanes_with_their_own_thread_limit(monkeypatch):
    # whatever team the suite's worker runs with (conftest: its share of the cores), lanes made under 4
    monkeypatch.delitem(resources._POOLS, "model2", raising=False)
    saved = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        _lanes_halve_the_team()
    finally:
        made = resources._POOLS.pop("model2", None)
        if made is not None:
            made.shutdown()
        torch.set_num_threads(saved)


def _lanes_halve_the_team():
    before = torch.get_num_threads()
    with ThreadPoolExecutor(4) as pool:
        seen = set(pool.map(lambda _: resources.model_call(
            lambda: (threading.current_thread().name, torch.get_num_threads()), lanes=2), range(16)))
    assert {name.rsplit("_", 1)[0] for name, _ in seen} == {"vae3d-model2"} and len(seen) <= 2
    # each lane's OpenMP team is half of torch's threads; the rest of the process keeps its own
    assert {threads for _, threads in seen} == {max(1, before // 2)}
    assert torch.get_num_threads() == before
    with ThreadPoolExecutor(1) as fresh:  # a thread started later gets torch's default too
        assert fresh.submit(torch.get_num_threads).result() == before
    with pytest.raises(ZeroDivisionError):
        resources.model_call(lambda: 1 / 0)


def test_model_map_keeps_order_and_bounds_the_calls_in_flight():
    running, peak, lock = [0], [0], threading.Lock()

    def slow_square(i):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.01)
        with lock:
            running[0] -= 1
        return i * i

    # two callers at once, as two Prefect task threads would be
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda r: list(resources.model_map(slow_square, r, lanes=2)),
                                [range(20), range(20, 40)]))
    assert results == [[i * i for i in range(20)], [i * i for i in range(20, 40)]]
    assert peak[0] <= 2  # never more calls running than lanes


def test_model_map_frees_its_slots_when_the_consumer_stops_or_a_call_fails():
    gen = resources.model_map(lambda i: i, range(100), lanes=2)
    assert next(gen) == 0
    gen.close()  # the consumer stopped early: queued calls are dropped, slots come back
    with pytest.raises(ZeroDivisionError):
        list(resources.model_map(lambda i: 1 / (i - 3), range(10), lanes=2))
    # all slots free again: a full run goes through without waiting on leaked slots
    done = threading.Event()
    threading.Thread(target=lambda: (list(resources.model_map(lambda i: i, range(50), lanes=2)), done.set())).start()
    assert done.wait(10)


@pytest.mark.parametrize("writers", [1, 2])
def test_pending_writes_are_bounded_and_slots_come_back_after_failures(writers):
    slots = resources.WRITE_SLOTS * writers
    gate = threading.Event()
    futures = [resources.submit_write(gate.wait, 10, writers=writers) for _ in range(slots)]
    blocked = threading.Thread(target=lambda: futures.append(resources.submit_write(lambda: "late", writers=writers)))
    blocked.start()
    time.sleep(0.3)
    assert blocked.is_alive()  # every slot is taken: the producer waits instead of piling up
    gate.set()
    blocked.join(5)
    assert not blocked.is_alive() and futures[-1].result(5) == "late"
    failing = resources.submit_write(lambda: 1 / 0, writers=writers)
    with pytest.raises(ZeroDivisionError):
        failing.result(5)
    # all slots are free again: as many writes as slots are accepted at once
    done = [resources.submit_write(lambda: None, writers=writers) for _ in range(slots)]
    assert all(f.result(5) is None for f in done)


def test_writes_run_on_as_many_threads_as_writers():
    barrier = threading.Barrier(2, timeout=5)  # passes only if two writes run at the same time
    futures = [resources.submit_write(lambda: (barrier.wait(), threading.current_thread().name)[1], writers=2)
               for _ in range(2)]
    names = {f.result(5) for f in futures}
    assert len(names) == 2 and all(n.startswith("vae3d-writer2") for n in names)


def test_one_writer_beside_a_cpu_decoder_more_beside_a_gpu(monkeypatch):
    assert resources.resolve_writers(0, torch.device("cpu")) == 1
    assert resources.resolve_writers(3, torch.device("cpu")) == 3  # a setting wins
    monkeypatch.setattr(resources.os, "sched_getaffinity", lambda _: set(range(16)))
    assert resources.resolve_writers(0, torch.device("cuda", 0)) == resources.MAX_WRITERS
    monkeypatch.setattr(resources.os, "sched_getaffinity", lambda _: {0, 1})
    assert resources.resolve_writers(0, torch.device("cuda")) == 1  # one core for the writer, one for the rest
