"""Schedulers: which action runs when, and where its rule runs.

A scheduler walks the DAG and hands each ready action to the ``ActionRunner`` (which decides
keys, hits and locks on this host); for the actions that must run it supplies the ``invoke``
function that runs the rule: in a local thread (``threads``) or on a build farm. Schedulers
register by name in ``SCHEDULERS`` (entry point group ``trtcas.schedulers``).
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol

from trtcas.errors import TrtcasError
from trtcas.graph.result import ActionRecord
from trtcas.registry import Registry

if TYPE_CHECKING:  # annotations only: settings are read before anything is planned
    import networkx as nx

    from trtcas.graph.runner import ActionRunner


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


# The target file's (or user config's) [execution] table; flags override it.
EXECUTION_KEYS = frozenset({"scheduler", "address"})


def open_scheduler(name: str, **options: Any) -> Scheduler:
    """The scheduler ``name``, given the options its factory takes (a local pool has no
    cluster address; ``None`` means "not given")."""
    factory = SCHEDULERS.get(name)
    params = inspect.signature(factory).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        options = {k: v for k, v in options.items() if k in params}
    return factory(**{k: v for k, v in options.items() if v is not None})


def execution_settings(section: Any, scheduler: str | None, address: str | None) -> tuple[str, str | None]:
    """(scheduler name, cluster address): flags first, then the ``[execution]`` table."""
    if section is None:
        section = {}
    if not isinstance(section, Mapping):
        raise TrtcasError("[execution] must be a table, e.g. scheduler = \"ray\"")
    unknown = set(section) - EXECUTION_KEYS
    if unknown:
        raise TrtcasError(f"[execution]: unknown setting(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(EXECUTION_KEYS))}")
    for key in EXECUTION_KEYS & set(section):
        if not isinstance(section[key], str) or not section[key].strip():
            raise TrtcasError(f"[execution] {key} = {section[key]!r}: must be a non-empty string")
    name = scheduler or section.get("scheduler") or ("ray" if address else "threads")  # an address means a farm
    if name not in SCHEDULERS:
        raise TrtcasError(f"unknown scheduler {name!r}; known: {', '.join(SCHEDULERS.names())}")
    if address and name != "ray":
        raise TrtcasError(f"--ray-address {address} is for the ray scheduler, but the scheduler is {name!r}; "
                          "drop --ray-address or use --scheduler ray")
    return name, address or section.get("address")
