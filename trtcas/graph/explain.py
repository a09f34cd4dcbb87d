"""Why did this action re-run? A diff of key components between two builds.

Each changed key component becomes one ``Change`` (component, before, after, detail), said
as one line a person can act on:
    input `network` changed blake3:ab12.. -> blake3:77e0..
    param optimization_level 3 -> 5
    fingerprint tensorrt_rtx_version 1.7.1 -> 1.8.0
Rules may add richer lines (the TensorRT engine rule diffs the two canonical networks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from trtcas.cas.digest import Digest
from trtcas.graph.history import load_build
from trtcas.graph.rule import RULES, ExplainInput, RuleRegistry


def _short(value: Any) -> str:
    if isinstance(value, str) and ":" in value and "/" in value:
        try:
            return Digest.parse(value).short + ".."
        except Exception:
            return value
    return repr(value) if isinstance(value, str) else str(value)


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    """Leaves by dotted path; lists of tables are walked too (``profiles[0].x.max``), so a
    change names the smallest part that changed."""
    if isinstance(value, Mapping) and value:
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        for i, v in enumerate(value):
            _flatten(f"{prefix}[{i}]", v, out)
    else:
        out[prefix] = value


_SECTION_WORDS = {"inputs": "input", "params": "param", "env": "fingerprint"}


@dataclass(frozen=True)
class Change:
    """One changed key component: ``component`` (e.g. ``param optimization_level``,
    ``input weights``, ``network``), its value before and after (None when added/removed or
    not a value), and ``detail`` (free text, e.g. a layer attribute that changed)."""

    component: str
    before: Any = None
    after: Any = None
    detail: str = ""
    also: tuple[str, ...] = ()  # other components that changed the same way (said once)
    replaces: str = ""  # a rule's richer Change said instead of this generic component

    def text(self, verb: str = "changed") -> str:
        if self.detail:
            return f"{self.component}: {self.detail}" if self.component else self.detail
        word, _, name = self.component.partition(" ")
        label = f"{word} `{name}` {verb}" if word == "input" else self.component
        if self.before is None and self.after is not None:
            text = f"{word} {name} added: {_short(self.after)}"
        elif self.after is None and self.before is not None:
            text = f"{word} {name} removed (was {_short(self.before)})"
        else:
            text = f"{label} {_short(self.before)} -> {_short(self.after)}"
        return text + (f" (also {', '.join(self.also)})" if self.also else "")

    def to_dict(self) -> dict[str, Any]:
        data = {"component": self.component, "before": self.before, "after": self.after, "detail": self.detail}
        if self.also:
            data["also"] = list(self.also)
        if self.replaces:
            data["replaces"] = self.replaces
        return data


def diff_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    """One Change per changed key component (rule, version, each param/input/env field);
    components that changed identically (a profile in the spec and in the effective builder
    config) are one Change."""
    changes: list[Change] = []
    for section in ("rule", "rule_version", "schema"):
        if old.get(section) != new.get(section):
            changes.append(Change(section.replace("_", " "), old.get(section), new.get(section)))
    for section, word in _SECTION_WORDS.items():
        before, after = {}, {}
        _flatten("", old.get(section, {}), before)
        _flatten("", new.get(section, {}), after)
        for name in sorted(before.keys() | after.keys()):
            if before.get(name, _MISSING) != after.get(name, _MISSING):
                changes.append(Change(f"{word} {name}", before.get(name), after.get(name)))
    return _merge_same(changes)


_MISSING = object()


def _merge_same(changes: list[Change]) -> list[Change]:
    merged: dict[tuple[str, str], Change] = {}
    for change in changes:
        same = (repr(change.before), repr(change.after))
        if change.before is None or change.after is None or same not in merged:
            merged[same if change.before is not None and change.after is not None else (change.component, "")] = change
            continue
        first = merged[same]
        merged[same] = Change(first.component, first.before, first.after, first.detail,
                              first.also + (change.component.partition(" ")[2],))
    return list(merged.values())


def diff_components(old: Mapping[str, Any], new: Mapping[str, Any], verb: str = "changed") -> list[str]:
    """:func:`diff_changes` as lines of text."""
    return [c.text(verb) for c in diff_changes(old, new)]


# Statuses of actions that ran (or would run): the ones explain is about.
RAN = ("built", "would-build", "failed")


@dataclass(frozen=True)
class Explanation:
    action_id: str
    status: str
    changes: tuple[Change, ...]

    @property
    def ran(self) -> bool:
        return self.status in RAN

    @property
    def lines(self) -> tuple[str, ...]:
        return tuple(c.text() for c in self.changes)

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action_id, "status": self.status, "changes": [c.to_dict() for c in self.changes]}


def _said(lines: list[Any]) -> list[Change]:
    """Rule-supplied lines (strings or Changes) as Changes."""
    return [line if isinstance(line, Change) else Change("", detail=str(line)) for line in lines]


def explain_builds(
    old: Mapping[str, Mapping[str, Any]] | None,
    new: Mapping[str, Mapping[str, Any]],
    registry: RuleRegistry,
    blobs: Any,
    only: str | None = None,
) -> list[Explanation]:
    """For each action of ``new``, what changed since ``old`` (for actions that did not
    run: that they did not, and for tensor-parallel ranks whether they shared a build)."""
    explanations = []
    for action_id, record in new.items():
        if only and only not in (action_id, record.get("rule")):
            continue
        status = record["status"]
        rule = registry.get(record["rule"]) if record["rule"] in registry else None
        shared = _said(rule.explain_sharing(action_id, new)) if rule is not None and rule.explain_sharing else []
        if status not in RAN:
            explanations.append(Explanation(action_id, status, (Change("", detail=f"not re-run ({status})"), *shared)))
            continue
        before = (old or {}).get(action_id)
        if before is None or not before.get("key_components"):
            why = Change("", detail="no earlier build of this action to compare with")
            explanations.append(Explanation(action_id, status, (why, *shared)))
            continue
        if not record.get("key_components"):
            why = Change("", detail=record.get("reason") or "its key is not known yet")
            explanations.append(Explanation(action_id, status, (why,)))
            continue
        if before["key"] == record["key"]:
            why = "same key as the earlier build, but its cache entry was missing (evicted, or its blobs were)"
            explanations.append(Explanation(action_id, status, (Change("", detail=why),)))
            continue
        changes = diff_changes(before["key_components"], record["key_components"])
        if rule is not None and rule.explain is not None:
            try:
                richer = _said(rule.explain(ExplainInput(before, record, old or {}, new, blobs)))
            except Exception as exc:  # a richer diff is a bonus; never fail explain for it
                richer = [Change("", detail=f"(detailed diff unavailable: {exc})")]
            replaced = {c.replaces for c in richer if c.replaces}
            changes = [c for c in changes if c.component not in replaced] + richer
        explanations.append(Explanation(action_id, status, tuple(changes + shared)))
    return explanations


@dataclass(frozen=True)
class ActionStatus:
    """One line of ``trtcas status``: whether an action is up to date, and if not, why."""

    action_id: str
    status: str  # the dry run's status: cached, remote, shared, would-build; failed, skipped
    why: str = ""
    known: bool = True  # False: its key waits for an upstream action, so it only may run
    error: str = ""  # failed: why it cannot run (a missing input, a bad model), as the build would say

    @property
    def up_to_date(self) -> bool:
        return self.status in UP_TO_DATE

    def text(self) -> str:
        if self.up_to_date:
            return "up to date" + ("" if self.status == "cached" else f" ({self.status})")
        if self.status == "failed":
            return f"cannot run: {self.error}" if self.error else "cannot run"
        if self.status == "skipped":
            return "cannot run: an action it depends on cannot run"
        if self.status == "cancelled":
            return "not checked (interrupted)"
        verb = "would run" if self.known else "may run"
        return f"{verb}: {self.why}" if self.why else verb

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action_id, "status": self.status, "up_to_date": self.up_to_date,
                "certain": self.known, "why": self.why, "error": self.error or None}


UP_TO_DATE = ("cached", "remote", "shared")


def status_lines(store: Any, slug: str, result: Any) -> list[ActionStatus]:
    """A dry run's records, each with the first reason it would run (against the last build)."""
    last = load_build(store.root, slug, "last")
    new = {r.id: r.to_dict(with_components=True) for r in result.actions}
    why = {e.action_id: e.lines for e in explain_builds(last, new, RULES, store.blobs) if e.ran}
    lines = []
    for record in result.actions:
        reasons = why.get(record.id, ())
        said = "; ".join(reasons[:2]) + (" ..." if len(reasons) > 2 else "")
        lines.append(ActionStatus(record.id, record.status, said, known=record.key is not None or record.status != "would-build",
                                  error=record.problem))
    return lines
