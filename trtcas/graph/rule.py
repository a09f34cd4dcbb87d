"""Rules: what an action does, declared so the graph can key it without running it.

A rule declares its name and version (bump the version when its output for the same
inputs changes), which params are cosmetic (dropped from the key), which environment
fingerprint fields its output depends on, and a ``run`` function. Rules register
themselves; ``graph`` never imports the TensorRT rules, they plug in here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

from trtcas.cas.digest import Digest
from trtcas.errors import TrtcasError


class RunContext(Protocol):
    """What a running rule may touch (implemented by the executor)."""

    action_id: str
    params: Mapping[str, Any]
    scratch: Path

    def input_digest(self, name: str) -> Digest: ...
    def input_path(self, name: str) -> Path: ...
    def input_bytes(self, name: str) -> bytes: ...
    def put_bytes(self, data: bytes) -> Digest: ...
    def put_file(self, path: Path) -> Digest: ...
    def log(self, message: str) -> None: ...


# A rule's run returns output name -> bytes, a file Path, or an already stored Digest.
RunFunction = Callable[[RunContext], Mapping[str, "bytes | Path | Digest"]]
# Optional richer explanation: (old components, new components, store) -> lines.
ExplainFunction = Callable[[Mapping[str, Any], Mapping[str, Any], Any], list[str]]


@dataclass(frozen=True)
class Rule:
    name: str
    version: int
    run: RunFunction
    fingerprint_fields: tuple[str, ...] = ()
    cosmetic_params: frozenset[str] = frozenset()
    # Defaults are merged in before keying, so `repeat = 1` written out and left implicit
    # are the same build.
    param_defaults: Mapping[str, Any] = field(default_factory=dict)
    # Inputs the rule reads but whose content other (keyed) inputs already pin down, e.g.
    # the ONNX file an engine is built from, whose structure and weights are keyed through
    # the canonical network. Keying it too would make a node rename rebuild the engine.
    unkeyed_inputs: frozenset[str] = frozenset()
    explain: ExplainFunction | None = None
    # Optional: fields decided at key time from params (e.g. "tensorrt_rtx_version" when
    # params say the backend is tensorrt_rtx). Returns extra fingerprint field names.
    dynamic_fingerprint: Callable[[Mapping[str, Any]], tuple[str, ...]] | None = None
    # Per-rank actions of this rule are expected to share keys (TP engines): explain says
    # for each rank whether it shared with rank 0 and, if not, which component differs.
    explain_sharing: bool = False
    doc: str = ""

    def key_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        merged = {**self.param_defaults, **params}
        return {k: v for k, v in merged.items() if k not in self.cosmetic_params}

    def env_fields(self, params: Mapping[str, Any]) -> tuple[str, ...]:
        extra = self.dynamic_fingerprint(params) if self.dynamic_fingerprint else ()
        return tuple(sorted(set(self.fingerprint_fields) | set(extra)))


@dataclass
class RuleRegistry:
    rules: dict[str, Rule] = field(default_factory=dict)

    def register(self, rule: Rule) -> Rule:
        self.rules[rule.name] = rule
        return rule

    def get(self, name: str) -> Rule:
        try:
            return self.rules[name]
        except KeyError:
            known = ", ".join(sorted(self.rules)) or "none"
            raise TrtcasError(f"unknown rule {name!r} (known rules: {known})") from None


REGISTRY = RuleRegistry()


def register_rule(rule: Rule) -> Rule:
    return REGISTRY.register(rule)
