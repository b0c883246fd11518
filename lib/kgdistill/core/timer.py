"""Wall-clock timing of work that may run asynchronously on a CUDA device.

A CUDA kernel returns before it has run, so a timer of GPU work must wait for the device
(:func:`synchronize`) before it reads the clock; on a CPU there is nothing to wait for and the
helpers time the calls as they are. Every time here is in **seconds** of ``time.perf_counter``.

* :func:`synchronize`: wait for ``device`` when it is a CUDA device (a no-op otherwise).
* :class:`Stopwatch`: a context manager timing its block (``seconds`` after the block).
* :func:`timed`: seconds of each of ``repeats`` calls of a function, after untimed warm-up calls.

Where the device is synchronised is a choice of the caller: by default before the clock starts
(work queued earlier is not counted) and before it stops (the block's own work is);
``sync_before=False`` leaves out the first, and ``device=None`` both (wall clock only).
"""
from __future__ import annotations

import math
import time
from typing import Callable

import torch

#: what the helpers take as a device: a torch device, its name (``"cpu"``, ``"cuda:1"``), or None
#: (time the wall clock only, never synchronise)
Device = torch.device | str | None


def synchronize(device: Device) -> None:
    """Wait until every kernel queued on ``device`` has finished, when it is a CUDA device;
    nothing on a CPU (its work is done when the call returns) or for ``None``."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch:
    """Times the block of a ``with`` statement: ``seconds`` (float, wall seconds) after it.

    ``device`` is synchronised before the clock starts (unless ``sync_before=False``) and before
    it stops, so the block's queued CUDA work is counted and earlier work is not; ``device=None``
    synchronises nothing. If the block raises, nothing is synchronised and ``seconds`` stays NaN.

        with Stopwatch(device) as watch:
            scores = model.score_tails(queries)
        print(watch.seconds)
    """

    def __init__(self, device: Device, *, sync_before: bool = True) -> None:
        self.device = device
        self.sync_before = sync_before
        self.seconds = math.nan
        self._start = math.nan

    def __enter__(self) -> Stopwatch:
        if self.sync_before:
            synchronize(self.device)
        self._start = time.perf_counter()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            synchronize(self.device)
            self.seconds = time.perf_counter() - self._start
        return False


def timed(fn: Callable[[], object], device: Device, *, repeats: int = 1, warmup: int = 0,
          sync_before: bool = True) -> list[float]:
    """Wall seconds of each of ``repeats`` calls of ``fn()`` (a list, in call order), each timed by
    a :class:`Stopwatch` on ``device`` (``sync_before`` as there).

    ``warmup`` calls come first and are not timed; the device is synchronised after them, so their
    work never counts in the first timed call. ``fn``'s return values are dropped.
    """
    for _ in range(warmup):
        fn()
    if warmup:
        synchronize(device)
    times = []
    for _ in range(repeats):
        with Stopwatch(device, sync_before=sync_before) as watch:
            fn()
        times.append(watch.seconds)
    return times
