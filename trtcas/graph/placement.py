"""Where an action may run on a build farm: resource names that hosts offer and rules need.

Bazel routes a remote action to a worker whose platform properties match; trtcas does the
same with named resources. A host offers names (``trtcas/sm86``, ``trtcas/tensorrt_rtx=1.7.1.116``,
and ``trtcas/worker``, which every trtcas worker has); a rule says what its actions need
through ``Rule.placement(params, key env)``. The scheduler then only has to match names:
it knows nothing of GPUs or TensorRT.

The check runs over the whole graph before anything is sent to the farm, so a fleet that
cannot build one of the actions fails at once with the missing name, not half-way through.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from trtcas.errors import TrtcasError
from trtcas.graph.rule import Rule

PREFIX = "trtcas/"
# Every host started by `trtcas worker start` offers this: actions whose rule needs nothing
# in particular still need trtcas installed, which a bare Ray node may not have.
WORKER = PREFIX + "worker"
# What a host offers of each name: plenty, so names route and never limit concurrency
# (CPUs do that); what an action asks of each.
OFFERED_AMOUNT = 1000.0
REQUESTED_AMOUNT = 0.001


def sm_resource(sm: str) -> str:
    """``sm86`` -> ``trtcas/sm86``."""
    return f"{PREFIX}{sm}"


def flavour_resource(flavour: str, version: str) -> str:
    """``tensorrt_rtx``, ``1.7.1.116`` -> ``trtcas/tensorrt_rtx=1.7.1.116``."""
    return f"{PREFIX}{flavour}={version}"


def action_needs(rule: Rule, params: Mapping[str, Any], env: Mapping[str, Any]) -> tuple[str, ...]:
    """The resource names a host must offer to run an action of ``rule`` (sorted)."""
    needs = set(rule.placement(params, env)) if rule.placement else set()
    return tuple(sorted(needs | {WORKER}))


def requested_resources(needs: Iterable[str]) -> dict[str, float]:
    """What a task asks of each needed name (a sliver: names route, CPUs limit)."""
    return {name: REQUESTED_AMOUNT for name in needs}


def offered_resources(names: Iterable[str]) -> dict[str, float]:
    """What a host started with these names offers (``ray start --resources``)."""
    return {name: OFFERED_AMOUNT for name in sorted(set(names) | {WORKER})}


@dataclass(frozen=True)
class Node:
    """One host of the farm as the placement check sees it."""

    node_id: str
    host: str
    offers: frozenset[str]


def unplaceable(action_id: str, needs: tuple[str, ...], nodes: Iterable[Node]) -> str | None:
    """Why no node can run an action (naming the missing resource), or None if one can."""
    nodes = list(nodes)
    if any(set(needs) <= node.offers for node in nodes):
        return None
    offered = set().union(*(n.offers for n in nodes)) if nodes else set()
    absent = [name for name in needs if name not in offered]
    if absent:
        sms = [name[len(PREFIX):] for name in absent if name[len(PREFIX):].startswith("sm")]
        hint = f"trtcas worker start --address ADDR --sm {' --sm '.join(sms)}" if sms else "trtcas worker start --address ADDR"
        return (f"no Ray node offers {', '.join(absent)} (needed by {action_id}); "
                f"start a worker that can build it on a suitable host: {hint}")
    return (f"no single Ray node offers all of {', '.join(needs)} (needed by {action_id}); "
            "start a worker on a host that has them together")


def check_placeable(wanted: Iterable[tuple[str, tuple[str, ...]]], nodes: Iterable[Node]) -> None:
    """Raise for the first (action id, needs) that no node can run."""
    nodes = list(nodes)
    if not nodes:
        raise TrtcasError("the Ray cluster has no live nodes")
    for action_id, needs in wanted:
        why = unplaceable(action_id, needs, nodes)
        if why:
            raise TrtcasError(why)
