"""kgdistill.core.timer: when the device is synchronised, what the clock counts, what is returned.

No test times real work: the clock (``timer.time.perf_counter``) and ``torch.cuda.synchronize``
are replaced by fakes that write to one event log, so each test reads the order of calls,
synchronisations and clock readings, and the seconds are the fake clock's.
"""
from __future__ import annotations

import math
import types

import pytest
import torch

from kgdistill.core import timer


@pytest.fixture
def log(monkeypatch):
    """The event log: ``("clock", t)`` per clock reading (t = 0, 1, 2, ... seconds: each reading
    advances it by one), ``("sync", device)`` per CUDA synchronisation, ``"call"`` per call of
    :func:`work`."""
    events: list = []
    ticks = iter(range(1000))

    def clock() -> float:
        t = float(next(ticks))
        events.append(("clock", t))
        return t

    monkeypatch.setattr(timer, "time", types.SimpleNamespace(perf_counter=clock))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: events.append(("sync", device)))
    return events


def work(log: list):
    return lambda: log.append("call")


def test_synchronize_waits_for_cuda_devices_only(log):
    timer.synchronize(torch.device("cuda:1"))
    timer.synchronize("cuda")
    timer.synchronize(torch.device("cpu"))
    timer.synchronize("cpu")
    timer.synchronize(None)
    assert log == [("sync", torch.device("cuda:1")), ("sync", "cuda")]


def test_stopwatch_synchronises_before_and_after_the_block(log):
    device = torch.device("cuda")
    with timer.Stopwatch(device) as watch:
        log.append("call")
    assert log == [("sync", device), ("clock", 0.0), "call", ("sync", device), ("clock", 1.0)]
    assert watch.seconds == 1.0


def test_stopwatch_without_sync_before_synchronises_only_before_stopping(log):
    device = torch.device("cuda:0")
    with timer.Stopwatch(device, sync_before=False) as watch:
        log.append("call")
    assert log == [("clock", 0.0), "call", ("sync", device), ("clock", 1.0)]
    assert watch.seconds == 1.0


@pytest.mark.parametrize("device", [torch.device("cpu"), "cpu", None])
def test_stopwatch_on_a_cpu_or_none_reads_the_clock_only(log, device):
    with timer.Stopwatch(device) as watch:
        log.append("call")
    assert log == [("clock", 0.0), "call", ("clock", 1.0)]
    assert watch.seconds == 1.0


def test_a_block_that_raises_is_neither_synchronised_nor_timed(log):
    watch = timer.Stopwatch("cuda")
    with pytest.raises(ValueError):
        with watch:
            raise ValueError("inside")
    assert log == [("sync", "cuda"), ("clock", 0.0)]
    assert math.isnan(watch.seconds)


def test_timed_returns_the_seconds_of_each_timed_call(log):
    device = torch.device("cuda")
    assert timer.timed(work(log), device, repeats=3) == [1.0, 1.0, 1.0]
    assert log == [event for i in range(3) for event in
                   (("sync", device), ("clock", 2.0 * i), "call", ("sync", device), ("clock", 2.0 * i + 1))]


def test_warmup_calls_are_not_timed_and_are_waited_for(log):
    device = torch.device("cuda")
    seconds = timer.timed(work(log), device, repeats=2, warmup=2, sync_before=False)
    assert seconds == [1.0, 1.0]
    # two untimed calls, one synchronisation after them, then each timed call between two clock readings
    assert log[:3] == ["call", "call", ("sync", device)]
    assert log[3:] == [("clock", 0.0), "call", ("sync", device), ("clock", 1.0),
                       ("clock", 2.0), "call", ("sync", device), ("clock", 3.0)]


def test_timed_counts_the_seconds_between_the_clock_readings(monkeypatch):
    readings = iter([10.0, 10.5, 20.0, 22.0])
    monkeypatch.setattr(timer, "time", types.SimpleNamespace(perf_counter=lambda: next(readings)))
    calls = []
    assert timer.timed(lambda: calls.append(1), "cpu", repeats=2) == [0.5, 2.0]
    assert len(calls) == 2
    assert timer.timed(lambda: calls.append(1), None, repeats=0, warmup=1) == [] and len(calls) == 3


def test_the_loop_phase_timer_adds_up_and_synchronises_after_each_block(log):
    """TrainerBase.timed: phase seconds accumulate; the device is synchronised after the block
    (before the clock stops), not before it starts."""
    from kgdistill.protocol.loop import TrainerBase

    trainer = types.SimpleNamespace(device=torch.device("cuda"), phase_seconds={})
    for _ in range(2):
        with TrainerBase.timed(trainer, "meta"):
            log.append("call")
    with TrainerBase.timed(trainer, "actual"):
        pass
    assert trainer.phase_seconds == {"meta": 2.0, "actual": 1.0}
    assert log[:4] == [("clock", 0.0), "call", ("sync", torch.device("cuda")), ("clock", 1.0)]
