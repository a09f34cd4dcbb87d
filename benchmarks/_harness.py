"""The small shared part of every benchmark: timing, MB/s, random files, one JSON document out.

Figures are medians of a few runs, because these machines are noisy, and every benchmark
reports a baseline measured in the same run, because only ratios travel between machines.
Benchmarks import this as ``_harness`` (they put their own folder on ``sys.path``).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

CHUNK = 1 << 20
MB = 1e6


def timed(fn: Callable[[], object]) -> float:
    """Wall seconds of one call of ``fn``."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_seconds(fn: Callable[[], object], repeat: int = 3, before: Callable[[], object] | None = None) -> float:
    """Median wall seconds of ``repeat`` calls of ``fn``; ``before`` runs untimed before each."""
    times = []
    for _ in range(max(1, repeat)):
        if before is not None:
            before()
        times.append(timed(fn))
    return statistics.median(times)


def mbps(size: int, seconds: float) -> float:
    """Decimal MB per second, rounded for reading."""
    return round(size / seconds / MB, 1) if seconds > 0 else float("inf")


def ratio(numerator: float, denominator: float, digits: int = 2) -> float | None:
    """``numerator / denominator`` rounded, or None when the denominator is zero."""
    return round(numerator / denominator, digits) if denominator else None


def write_random_file(path: Path, size: int) -> Path:
    """``size`` random (incompressible) bytes at ``path``, written a chunk at a time."""
    with open(path, "wb") as out:
        for offset in range(0, size, CHUNK):
            out.write(os.urandom(min(CHUNK, size - offset)))
    return path


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version()}


def print_json(result: dict[str, Any]) -> None:
    """The benchmark's one JSON document on stdout, with the machine it ran on."""
    json.dump({**result, "machine": machine()}, sys.stdout, indent=2)
    sys.stdout.write("\n")
