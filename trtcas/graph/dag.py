"""Target config -> a networkx DiGraph of actions.

A target file either lists actions explicitly (``[[action]]`` tables; what tests and
unusual pipelines use) or has sections a registered *planner* understands (the TensorRT
rules provide planners, through the ``trtcas.planners`` entry points, for ``[model] onnx = ...`` and LLM checkpoints). Either way the
result is the same graph: nodes are action ids with the ``Action`` as attribute ``action``,
edges run producer -> consumer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from trtcas.errors import TrtcasError
from trtcas.graph.action import Action, InputRef
from trtcas.graph.rule import RULES
from trtcas.registry import Registry

if TYPE_CHECKING:  # imported where graphs are made: checking a target file's keys needs none of it
    import networkx as nx


@dataclass(frozen=True)
class PlannedTarget:
    """The actions of a target, and notes worth telling the user once per build (e.g.
    "weights are embedded because this machine cannot build refittable engines")."""

    actions: tuple[Action, ...]
    notes: tuple[str, ...] = ()
    # Say the notes only when an action of one of these rules runs (empty: always), so a
    # no-op build is quiet.
    notes_for_rules: tuple[str, ...] = ()


@dataclass(frozen=True)
class Planner:
    """Turns a target config's sections into actions; relative paths stay relative to
    ``base_dir`` (the target file's directory), which planners may read files from."""

    name: str
    applies: Callable[[Mapping[str, Any]], bool]
    plan: Callable[[Mapping[str, Any], Path], PlannedTarget]
    # The target-file sections and keys this planner reads (section -> key names), so that
    # trtcas.config rejects any other with a "did you mean". Adding a key is adding it here.
    schema: Mapping[str, frozenset[str]] = field(default_factory=dict)
    # Dotted keys whose presence selects this planner (e.g. "model.onnx"); named when a
    # target file selects two planners at once.
    selectors: tuple[str, ...] = ()


PLANNERS: Registry[Planner] = Registry("planner", entry_point_group="trtcas.planners")


def parse_input_ref(text: str, where: str) -> InputRef:
    """``"@action:output"`` references another action's output; anything else is a path."""
    if not isinstance(text, str) or not text:
        raise TrtcasError(f"{where}: an input must be a path or '@action:output', not {text!r}")
    if text.startswith("@"):
        action, sep, output = text[1:].partition(":")
        if not sep or not action or not output:
            raise TrtcasError(f"{where}: {text!r} should look like '@action_id:output_name'")
        return InputRef(action=action, output=output)
    return InputRef(path=text)


def _explicit_actions(config: Mapping[str, Any]) -> list[Action]:
    actions = []
    for i, table in enumerate(config.get("action", [])):
        where = f"[[action]] #{i + 1}"
        if not isinstance(table, Mapping) or "id" not in table or "rule" not in table:
            raise TrtcasError(f"{where}: every action needs an 'id' and a 'rule'")
        unknown = set(table) - {"id", "rule", "params", "inputs", "materialize"}
        if unknown:
            raise TrtcasError(f"{where} ({table['id']}): unknown key(s) {', '.join(sorted(unknown))}")
        inputs = {name: parse_input_ref(ref, f"{where} input {name!r}") for name, ref in table.get("inputs", {}).items()}
        actions.append(Action(
            id=str(table["id"]), rule=str(table["rule"]), params=dict(table.get("params", {})),
            inputs=inputs, materialize=dict(table.get("materialize", {})),
        ))
    return actions


# Explicit ``[[action]]`` target files (checked further in _explicit_actions).
EXPLICIT_SCHEMA: Mapping[str, frozenset[str]] = {"action": frozenset({"id", "rule", "params", "inputs", "materialize"})}


def _selected(config: Mapping[str, Any], planner: Planner) -> list[str]:
    found = []
    for dotted in planner.selectors:
        section, _, key = dotted.partition(".")
        table = config.get(section)
        if isinstance(table, Mapping) and key in table:
            found.append(f"[{section}] {key}")
    return found


def target_planner(config: Mapping[str, Any]) -> Planner | None:
    """The one planner whose sections ``config`` uses; None for ``[[action]]`` files or when
    none applies. Two at once (``onnx`` and ``hf`` in one [model]) is an error."""
    if "action" in config:
        return None
    planners = PLANNERS.all()
    matching = [planners[name] for name in sorted(planners) if planners[name].applies(config)]
    if len(matching) > 1:
        said = [s for p in matching for s in _selected(config, p)] or [p.name for p in matching]
        raise TrtcasError(f"{' and '.join(said)} cannot be used together: a target file builds one model; "
                          "keep one (or write a target file per model)")
    return matching[0] if matching else None


def plan_actions(config: Mapping[str, Any], base_dir: Path) -> PlannedTarget:
    if "action" in config:
        return PlannedTarget(tuple(_explicit_actions(config)))
    planner = target_planner(config)
    if planner is not None:
        return planner.plan(config, base_dir)
    planners = PLANNERS.all()
    kinds = ", ".join(planners) or "none registered"
    raise TrtcasError(f"the target file describes no build: add [[action]] tables or a [model] section (planners: {kinds})")


def build_graph(actions: Iterable[Action]) -> nx.DiGraph:
    """Check ids, rules and references; return the DAG."""
    import networkx as nx

    graph = nx.DiGraph()
    for action in actions:
        if action.id in graph:
            raise TrtcasError(f"two actions have the id {action.id!r}; ids must be unique")
        RULES.get(action.rule)
        graph.add_node(action.id, action=action)
    for action in (graph.nodes[n]["action"] for n in list(graph.nodes)):
        for name, ref in action.inputs.items():
            if ref.is_source:
                continue
            if ref.action not in graph:
                raise TrtcasError(f"action {action.id!r} input {name!r} refers to unknown action {ref.action!r}")
            graph.add_edge(ref.action, action.id, input=name, output=ref.output)
    try:
        cycle = nx.find_cycle(graph)
        raise TrtcasError(f"the actions form a cycle: {' -> '.join(edge[0] for edge in cycle)}")
    except nx.NetworkXNoCycle:
        pass
    return graph


def select(graph: nx.DiGraph, wanted: Iterable[str]) -> nx.DiGraph:
    """The subgraph needed for ``wanted`` actions (by id or rule name) and their ancestors."""
    import networkx as nx

    wanted = list(wanted)
    if not wanted:
        return graph
    roots = set()
    for name in wanted:
        matches = {n for n, data in graph.nodes(data=True) if n == name or data["action"].rule == name}
        if not matches:
            raise TrtcasError(f"no action or rule named {name!r} in this target (try `trtcas graph`)")
        roots |= matches
    keep = set(roots)
    for root in roots:
        keep |= nx.ancestors(graph, root)
    return graph.subgraph(keep).copy()


def topological_actions(graph: nx.DiGraph) -> list[Action]:
    """A deterministic topological order (ties broken by id)."""
    import networkx as nx

    return [graph.nodes[n]["action"] for n in nx.lexicographical_topological_sort(graph)]
