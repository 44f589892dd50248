"""Measurement helpers shared by the benchmark scripts (imported as a sibling module)."""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Callable


def time_interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds per fn, run round-robin after ``warmup`` rounds, so load bursts hit all alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            samples[k].append(time.perf_counter() - t0)
    return {k: statistics.median(s) for k, s in samples.items()}


def status_kb(field: str) -> int:
    """A ``/proc/self/status`` field in kB (e.g. ``VmRSS``, ``VmHWM``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)
