"""Rules: what an action does, declared so the graph can key it without running it.

A rule declares its name and version (bump the version when its output for the same
inputs changes), which params are cosmetic (dropped from the key), which environment
fingerprint fields its output depends on, and a ``run`` function. Rules are found in
``RULES`` by name (entry point group ``trtcas.rules``); ``graph`` never imports the TensorRT
rules, they plug in here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Mapping, Protocol

from trtcas.cas.digest import Digest
from trtcas.registry import Registry


class RunContext(Protocol):
    """What a running rule may touch (graph.context.StoreRunContext): its inputs, blobs by
    digest, and the store to put outputs in; never the store itself."""

    action_id: str
    params: Mapping[str, Any]
    scratch: Path
    algo: str  # the store's digest algorithm

    def input_digest(self, name: str) -> Digest: ...
    def input_path(self, name: str) -> Path: ...
    def input_bytes(self, name: str) -> bytes: ...
    def get_bytes(self, digest: Digest) -> bytes: ...
    def open_blob(self, digest: Digest) -> BinaryIO: ...
    def put_bytes(self, data: bytes) -> Digest: ...
    def put_file(self, path: Path) -> Digest: ...
    # Optional (a store with weight codecs): a tensor's bytes, its dtype, and the digest of
    # its previous version to store it as a delta against; and this action's outputs in the
    # target's last build (see graph.runner.Invocation.previous_outputs).
    # def put_tensor(self, data, dtype: str | None, parent: Digest | None) -> Digest: ...
    # def previous_output(self, name: str) -> Digest | None: ...
    # Optional (a local build that places the output): where to write output ``name`` in its
    # placed form while running, to be moved into the output dir (graph.prepared), or None.
    # def prepare_output(self, name: str) -> Path | None: ...
    def log(self, message: str) -> None: ...


# A rule's run returns output name -> bytes, a file Path, or an already stored Digest. A
# Path inside ``scratch`` is the rule's to give away: the store may move it rather than copy.
RunFunction = Callable[[RunContext], Mapping[str, "bytes | Path | Digest"]]
@dataclass(frozen=True)
class ExplainInput:
    """What a rule's ``explain`` sees of two runs of one action: their records (``key``,
    ``key_components``, ``inputs``, ``outputs``), the two builds they belong to (records by
    id, e.g. to read what the upstream network action produced), and a blob reader."""

    old: Mapping[str, Any]
    new: Mapping[str, Any]
    old_build: Mapping[str, Mapping[str, Any]]
    new_build: Mapping[str, Mapping[str, Any]]
    blobs: Any

    @property
    def old_components(self) -> Mapping[str, Any]:
        return self.old.get("key_components") or {}

    @property
    def new_components(self) -> Mapping[str, Any]:
        return self.new.get("key_components") or {}


# Optional richer explanation: ExplainInput -> lines (str, or graph.explain.Change). A Change
# with ``replaces`` set (e.g. "input io") is said instead of that generic component.
ExplainFunction = Callable[[ExplainInput], list[Any]]
# Optional: (action id, records of the build by id) -> lines saying whether this action
# shared its key with its siblings (e.g. tensor-parallel ranks) and, if not, why.
SharingFunction = Callable[[str, Mapping[str, Mapping[str, Any]]], list[str]]
# Optional: (params, the fingerprint fields in the action's key) -> the build-farm resources a
# host must offer to run it, e.g. ("trtcas/sm86", "trtcas/tensorrt_rtx=1.7.1.116") (see
# graph.placement). The key's own fields are used, so an action runs only where the
# environment its key claims exists.
PlacementFunction = Callable[[Mapping[str, Any], Mapping[str, Any]], tuple[str, ...]]


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
    # Actions of this rule expected to share keys (TP engines): what explain says about it.
    explain_sharing: SharingFunction | None = None
    # How each output is placed in the output dir, by format name (see graph.outputs);
    # outputs not named here are plain files.
    output_formats: Mapping[str, str] = field(default_factory=dict)
    placement: PlacementFunction | None = None
    # The names of the outputs every run returns. When declared, a cached entry (local or
    # remote) naming any other set is a miss, and so is a run that returns another set;
    # empty means "not declared" and only the names' safety is checked.
    outputs: tuple[str, ...] = ()
    # The rule reads its source inputs through memory maps (a checkpoint's tensors): the
    # runner lets it reuse the mappings its key was hashed through (cas.mapped_files).
    maps_sources: bool = False
    doc: str = ""

    def key_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        merged = {**self.param_defaults, **params}
        return {k: v for k, v in merged.items() if k not in self.cosmetic_params}

    def env_fields(self, params: Mapping[str, Any]) -> tuple[str, ...]:
        extra = self.dynamic_fingerprint(params) if self.dynamic_fingerprint else ()
        return tuple(sorted(set(self.fingerprint_fields) | set(extra)))


RuleRegistry = Registry[Rule]
RULES: RuleRegistry = Registry("rule", entry_point_group="trtcas.rules")
