"""What a build did, per action: the values ``trtcas build --json`` prints and
``trtcas.build()`` returns to benchmark harnesses."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

# built: ran here; cached: local action-cache hit; remote: hit in the remote cache;
# shared: same key as another action of this build, which ran once for both;
# would-build: --dry-run says it would run; failed; skipped: not run because a dependency failed;
# cancelled: stopped or never started because the build was cancelled (Ctrl-C).
STATUSES = ("built", "cached", "remote", "shared", "would-build", "failed", "skipped", "cancelled")


@dataclass(frozen=True)
class ActionRecord:
    id: str
    rule: str
    status: str
    seconds: float = 0.0
    key: str | None = None
    inputs: Mapping[str, str] = field(default_factory=dict)
    outputs: Mapping[str, str] = field(default_factory=dict)
    error: str | None = None
    reason: str | None = None  # e.g. why a dry-run action would build
    key_components: Mapping[str, Any] | None = None
    # Failed because a cached blob it needed was corrupt or gone: it has been quarantined,
    # so running the build again rebuilds it instead of failing.
    retryable: bool = False
    log: str | None = None  # digest of the rule's log (its last run; failed runs too): `trtcas log`
    # Where it ran: the Ray node's hex id (the driver's for actions decided or run locally;
    # None without a farm), the host name, and how long it waited for a farm worker.
    node_id: str | None = None
    host: str | None = None
    queue_seconds: float = 0.0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ActionRecord":
        """The record ``to_dict(with_components=True)`` wrote (build history, stamps)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @property
    def problem(self) -> str:
        """The error without the ``<action id>: `` it starts with ('' when none): for lines
        that name the action themselves (status, a line shared by actions failing alike)."""
        return (self.error or "").removeprefix(f"{self.id}: ")

    def to_dict(self, with_components: bool = False) -> dict[str, Any]:
        data = {
            "id": self.id, "rule": self.rule, "status": self.status, "seconds": round(self.seconds, 6),
            "key": self.key, "inputs": dict(self.inputs), "outputs": dict(self.outputs),
            "node_id": self.node_id, "host": self.host, "queue_seconds": round(self.queue_seconds, 6),
        }
        if self.error:
            data["error"] = self.error
        if self.reason:
            data["reason"] = self.reason
        if self.log:
            data["log"] = self.log
        if with_components:
            data["key_components"] = self.key_components
        return data


@dataclass(frozen=True)
class BuildResult:
    target: str
    ok: bool
    seconds: float
    actions: tuple[ActionRecord, ...]
    outputs: Mapping[str, str] = field(default_factory=dict)  # materialized path -> digest
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    error: str | None = None
    dry_run: bool = False

    @property
    def cancelled(self) -> bool:
        """True when the build was cancelled (Ctrl-C) before it finished."""
        return any(r.status == "cancelled" for r in self.actions)

    def action(self, action_id: str) -> ActionRecord:
        for record in self.actions:
            if record.id == action_id:
                return record
        raise KeyError(action_id)

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for record in self.actions:
            counts[record.status] = counts.get(record.status, 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target, "ok": self.ok, "seconds": round(self.seconds, 6), "dry_run": self.dry_run,
            "counts": self.counts(), "actions": [a.to_dict() for a in self.actions],
            "outputs": dict(self.outputs), "warnings": list(self.warnings), "notes": list(self.notes),
            "error": self.error,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)
