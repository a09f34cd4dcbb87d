"""The action graph as text, Graphviz DOT, Mermaid or JSON (``trtcas graph``).

Optional per-action annotations (e.g. status from a dry run) are shown beside each node,
so "what will run" and "what depends on what" are one picture.
"""

from __future__ import annotations

import json
import re
from typing import Mapping

import networkx as nx

from trtcas.graph.dag import topological_actions


def _dot_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _dot_quote(text: str) -> str:
    return f'"{_dot_escape(text)}"'


def to_text(graph: nx.DiGraph, notes: Mapping[str, str] = {}) -> str:
    lines = []
    for action in topological_actions(graph):
        deps = sorted(graph.predecessors(action.id))
        note = f"  [{notes[action.id]}]" if action.id in notes else ""
        after = f"  <- {', '.join(deps)}" if deps else ""
        sources = [str(ref) for ref in action.inputs.values() if ref.is_source]
        src = f"  (from {', '.join(sources)})" if sources else ""
        lines.append(f"{action.id}  ({action.rule}){note}{after}{src}")
    return "\n".join(lines)


def to_dot(graph: nx.DiGraph, notes: Mapping[str, str] = {}) -> str:
    lines = ["digraph trtcas {", "  rankdir=LR;", "  node [shape=box, fontname=monospace];"]
    for action in topological_actions(graph):
        parts = [action.id, action.rule] + ([f"[{notes[action.id]}]"] if action.id in notes else [])
        label = "\\n".join(_dot_escape(p) for p in parts)  # DOT's own line break escape
        lines.append(f'  {_dot_quote(action.id)} [label="{label}"];')
    for src, dst, data in sorted(graph.edges(data=True)):
        lines.append(f"  {_dot_quote(src)} -> {_dot_quote(dst)} [label={_dot_quote(data.get('input', ''))}];")
    lines.append("}")
    return "\n".join(lines)


def _mermaid_id(action_id: str, ids: dict[str, str]) -> str:
    return ids.setdefault(action_id, f"n{len(ids)}")


_MERMAID_ENTITIES = {'"': "#quot;", "<": "#lt;", ">": "#gt;", "|": "#124;", "#": "#35;"}


def _mermaid_label(text: str) -> str:
    """Text inside a quoted Mermaid label: brackets and parens are fine there; quotes, angle
    brackets, pipes and ``#`` become Mermaid entity codes, so labels read as written."""
    return re.sub(r'["<>|#]', lambda m: _MERMAID_ENTITIES[m.group(0)], text)


def to_mermaid(graph: nx.DiGraph, notes: Mapping[str, str] = {}) -> str:
    ids: dict[str, str] = {}
    lines = ["flowchart LR"]
    for action in topological_actions(graph):
        note = f" [{notes[action.id]}]" if action.id in notes else ""
        label = _mermaid_label(f"{action.id} ({action.rule}){note}")
        lines.append(f'    {_mermaid_id(action.id, ids)}["{label}"]')
    for src, dst, data in sorted(graph.edges(data=True)):
        edge = _mermaid_label(data.get("input", ""))
        lines.append(f'    {_mermaid_id(src, ids)} -->|"{edge}"| {_mermaid_id(dst, ids)}')
    return "\n".join(lines)


def to_json(graph: nx.DiGraph, notes: Mapping[str, str] = {}) -> str:
    nodes = []
    for action in topological_actions(graph):
        node = {
            "id": action.id, "rule": action.rule, "params": dict(action.params),
            "inputs": {name: str(ref) for name, ref in action.inputs.items()},
            "depends_on": sorted(graph.predecessors(action.id)),
        }
        if action.id in notes:
            node["note"] = notes[action.id]
        nodes.append(node)
    edges = [{"from": s, "to": d, "input": data.get("input"), "output": data.get("output")} for s, d, data in sorted(graph.edges(data=True))]
    return json.dumps({"actions": nodes, "edges": edges}, indent=2, default=str)


FORMATS = {"text": to_text, "dot": to_dot, "mermaid": to_mermaid, "json": to_json}
