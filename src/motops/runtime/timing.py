"""Timing of competing callables on a shared CPU: interleaved rounds, the least-disturbed one counts."""

from __future__ import annotations

import time
from typing import Any


def compare_speed(
    runners: dict[str, Any], *, rounds: int = 5, seconds: float = 0.4, warmup: int = 2
) -> dict[str, float]:
    """Seconds per call of each zero-argument callable, measured in interleaved rounds.

    The runners take turns (``rounds`` times, each for about ``seconds``) so that load from
    other processes on a shared CPU hits all of them alike; the fastest round's mean is
    reported (the least-disturbed one, as :mod:`timeit` advises).

    Returns:
        ``{name: seconds per call}``.
    """
    for fn in runners.values():
        for _ in range(warmup):
            fn()
    best = {name: float("inf") for name in runners}
    for _ in range(rounds):
        for name, fn in runners.items():
            n, start = 0, time.perf_counter()
            while n < 2 or time.perf_counter() - start < seconds:
                fn()
                n += 1
            best[name] = min(best[name], (time.perf_counter() - start) / n)
    return best
