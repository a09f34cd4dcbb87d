"""Schedulers: which action runs when, and where its rule runs.

A scheduler walks the DAG and hands each ready action to the ``ActionRunner`` (which decides
keys, hits and locks on this host); for the actions that must run it supplies the ``invoke``
function that runs the rule: in a local thread (``threads``) or on a build farm. Schedulers
register by name in ``SCHEDULERS`` (entry point group ``trtcas.schedulers``).
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import networkx as nx

from trtcas.graph.result import ActionRecord
from trtcas.graph.runner import ActionRunner
from trtcas.registry import Registry


class Reporter(Protocol):
    def started(self, action: Any) -> None: ...
    def finished(self, record: ActionRecord) -> None: ...


class NullReporter:
    """A Reporter that reports nothing (the null object instead of ``if reporter:``)."""

    def started(self, action: Any) -> None:
        pass

    def finished(self, record: ActionRecord) -> None:
        pass


class Scheduler(Protocol):
    name: str

    def execute(self, graph: nx.DiGraph, runner: ActionRunner, dry_run: bool, reporter: Reporter) -> list[ActionRecord]:
        """Run every action of ``graph``; records in a deterministic topological order."""
        ...


# name -> factory(jobs=..., **options) -> Scheduler
SCHEDULERS: Registry[Callable[..., Scheduler]] = Registry("scheduler", entry_point_group="trtcas.schedulers")


def open_scheduler(name: str, **options: Any) -> Scheduler:
    return SCHEDULERS.get(name)(**options)
