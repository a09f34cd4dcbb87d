"""The small shared part of every benchmark: timing, MB/s, and one JSON document out.

Figures are medians of a few runs, because these machines are noisy, and every benchmark
reports a baseline measured in the same run, because only ratios travel between machines.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from typing import Callable


def median(fn: Callable[[], object], repeat: int = 3) -> float:
    """Median wall seconds of ``repeat`` calls of ``fn``."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def mbps(size: int, seconds: float) -> float:
    """Decimal MB per second, rounded for reading."""
    return round(size / seconds / 1e6, 1) if seconds > 0 else float("inf")


def machine() -> dict:
    """What the figures were measured on."""
    return {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version()}


def print_json(name: str, results: dict) -> None:
    """One JSON document on stdout: the benchmark's name, the machine, its results."""
    json.dump({"benchmark": name, "machine": machine(), **results}, sys.stdout, indent=2)
    sys.stdout.write("\n")
