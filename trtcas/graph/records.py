"""Records every build leaves behind: an execution log and a Chrome trace.

The execution log (JSON lines, one per action: id, key, status, seconds, input and output
digests) is what you grep when a build behaved oddly; the trace (``--profile F``) opens in
Perfetto or chrome://tracing and shows where the time went and what ran in parallel.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from trtcas.cas.atomic import atomic_write_bytes
from trtcas.graph.result import ActionRecord


@dataclass(frozen=True)
class Span:
    """When an action ran, on which worker (for the trace)."""

    action_id: str
    rule: str
    status: str
    start_s: float
    end_s: float
    worker: int
    node: str = ""  # the build-farm node it ran on ("" = this process): one track per node


def write_execution_log(path: str | os.PathLike, records: list[ActionRecord]) -> None:
    lines = [json.dumps(r.to_dict(), sort_keys=True) for r in records]
    atomic_write_bytes(Path(path), ("\n".join(lines) + "\n").encode())


def write_trace(path: str | os.PathLike, spans: list[Span], build_start_s: float) -> None:
    """Chrome trace-event format: complete ('X') events in microseconds; a process track per
    node (1 = this one), a thread per worker."""
    nodes = {"": 1} | {node: i + 2 for i, node in enumerate(sorted({s.node for s in spans} - {""}))}
    events = [{"name": "process_name", "ph": "M", "pid": pid, "args": {"name": node or "trtcas build"}}
              for node, pid in nodes.items()]
    for node, worker in sorted({(s.node, s.worker) for s in spans}):
        events.append({"name": "thread_name", "ph": "M", "pid": nodes[node], "tid": worker, "args": {"name": f"worker {worker}"}})
    for span in spans:
        events.append({
            "name": span.action_id, "cat": span.rule, "ph": "X", "pid": nodes[span.node], "tid": span.worker,
            "ts": round((span.start_s - build_start_s) * 1e6, 3),
            "dur": round((span.end_s - span.start_s) * 1e6, 3),
            "args": {"status": span.status, "rule": span.rule},
        })
    atomic_write_bytes(Path(path), json.dumps({"traceEvents": events, "displayTimeUnit": "ms"}).encode())
