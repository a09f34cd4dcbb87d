"""The local scheduler: a thread pool of ``jobs`` workers over the DAG.

Ready actions start in id order (deterministic logs); after the first failure nothing new
starts, the running ones finish, and what never ran is recorded as ``skipped``.
"""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

import networkx as nx

from trtcas.graph.interrupt import cancel_requested
from trtcas.graph.result import ActionRecord
from trtcas.graph.runner import ActionRunner, Invoke
from trtcas.graph.schedulers import Reporter


class ThreadScheduler:
    name = "threads"

    def __init__(self, jobs: int = 2, invoke: Invoke | None = None):
        self.jobs = max(1, jobs)
        self.invoke = invoke  # None: rules run in this process

    def execute(self, graph: nx.DiGraph, runner: ActionRunner, dry_run: bool, reporter: Reporter) -> list[ActionRecord]:
        order = list(nx.lexicographical_topological_sort(graph))
        waiting = {n: set(graph.predecessors(n)) for n in order}
        ready = [n for n in order if not waiting[n]]
        records: dict[str, ActionRecord] = {}
        failed = False

        def one(node: str) -> ActionRecord:
            action = graph.nodes[node]["action"]
            reporter.started(action)
            return runner.run(action, dry_run, self.invoke)

        with ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="trtcas") as pool:
            running: dict[Future, str] = {}
            while ready or running:
                while ready and not failed and len(running) < self.jobs:
                    node = ready.pop(0)
                    running[pool.submit(one, node)] = node
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=lambda f: running[f]):
                    node = running.pop(future)
                    records[node] = record = future.result()
                    reporter.finished(record)
                    if record.status in ("failed", "cancelled"):
                        failed = True
                        continue
                    for succ in sorted(graph.successors(node)):
                        waiting[succ].discard(node)
                        if not waiting[succ]:
                            ready.append(succ)
        for node in order:
            if node not in records:
                action = graph.nodes[node]["action"]
                status, reason = ("cancelled", "the build was cancelled") if cancel_requested() else \
                    ("skipped", "a dependency failed")
                records[node] = ActionRecord(action.id, action.rule, status, reason=reason)
                reporter.finished(records[node])
        return [records[n] for n in order]
