"""Why did this action re-run? A diff of key components between two builds.

Each changed component becomes one line a person can act on:
    input `network` changed blake3:ab12.. -> blake3:77e0..
    param optimization_level 3 -> 5
    fingerprint tensorrt_rtx_version 1.7.1 -> 1.8.0
Rules may add richer lines (the TensorRT engine rule diffs the two canonical networks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from trtcas.cas.digest import Digest
from trtcas.graph.rule import RuleRegistry


def _short(value: Any) -> str:
    if isinstance(value, str) and ":" in value and "/" in value:
        try:
            return Digest.parse(value).short + ".."
        except Exception:
            return value
    return repr(value) if isinstance(value, str) else str(value)


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping) and value:
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


_SECTION_WORDS = {"inputs": "input", "params": "param", "env": "fingerprint"}


def diff_components(old: Mapping[str, Any], new: Mapping[str, Any], verb: str = "changed") -> list[str]:
    """One line per changed key component (rule, version, each param/input/env field)."""
    lines = []
    for section in ("rule", "rule_version", "schema"):
        if old.get(section) != new.get(section):
            lines.append(f"{section.replace('_', ' ')} {_short(old.get(section))} -> {_short(new.get(section))}")
    for section, word in _SECTION_WORDS.items():
        before, after = {}, {}
        _flatten("", old.get(section, {}), before)
        _flatten("", new.get(section, {}), after)
        for name in sorted(before.keys() | after.keys()):
            if name not in after:
                lines.append(f"{word} {name} removed (was {_short(before[name])})")
            elif name not in before:
                lines.append(f"{word} {name} added: {_short(after[name])}")
            elif before[name] != after[name]:
                label = f"`{name}`" if section == "inputs" else name
                said = f" {verb}" if section == "inputs" else ""
                lines.append(f"{word} {label}{said} {_short(before[name])} -> {_short(after[name])}")
    return lines


@dataclass(frozen=True)
class Explanation:
    action_id: str
    status: str
    lines: tuple[str, ...]


def explain_builds(
    old: Mapping[str, Mapping[str, Any]] | None,
    new: Mapping[str, Mapping[str, Any]],
    registry: RuleRegistry,
    blobs: Any,
    only: str | None = None,
) -> list[Explanation]:
    """For each action of ``new`` that ran (or would run), what changed since ``old``."""
    explanations = []
    for action_id, record in new.items():
        if only and only not in (action_id, record.get("rule")):
            continue
        status = record["status"]
        rule = registry.get(record["rule"]) if record["rule"] in registry else None
        shared = rule.explain_sharing(action_id, new) if rule is not None and rule.explain_sharing else []
        if status not in ("built", "would-build", "failed"):
            explanations.append(Explanation(action_id, status, (f"not re-run ({status})", *shared)))
            continue
        before = (old or {}).get(action_id)
        if before is None or not before.get("key_components"):
            explanations.append(Explanation(action_id, status, ("no earlier build of this action to compare with", *shared)))
            continue
        if not record.get("key_components"):
            explanations.append(Explanation(action_id, status, (record.get("reason") or "its key is not known yet",)))
            continue
        if before["key"] == record["key"]:
            why = "same key as the earlier build, but its cache entry was missing (evicted, or its blobs were)"
            explanations.append(Explanation(action_id, status, (why,)))
            continue
        lines = diff_components(before["key_components"], record["key_components"])
        if rule is not None and rule.explain is not None:
            try:
                lines += rule.explain(before["key_components"], record["key_components"], blobs)
            except Exception as exc:  # a richer diff is a bonus; never fail explain for it
                lines.append(f"(detailed diff unavailable: {exc})")
        explanations.append(Explanation(action_id, status, tuple(lines + shared)))
    return explanations
