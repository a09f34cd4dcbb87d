"""Running a rule: the ``RunContext`` it sees, and storing what it returns.

A rule touches the world only through its context: its inputs (by name), blobs by digest
(read, verified), and putting bytes or files into the store. It never sees the store
itself, so a rule runs the same in this process and on a build-farm worker whose store is
its own local cache in front of the team's remote.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, BinaryIO, Mapping, Protocol

from trtcas.cas.actioncache import ActionResult
from trtcas.cas.content_store import ContentStore
from trtcas.cas.digest import Digest
from trtcas.cas.tree import source_digest
from trtcas.errors import TrtcasError
from trtcas.graph.action import Action, ActionKey
from trtcas.graph.interrupt import BuildCancelled, cancel_requested, track_scratch, untrack_scratch
from trtcas.graph.prepared import PreparedOutputs
from trtcas.graph.rule import RuleRegistry
from trtcas.oserrors import describe_resource_error


class ActionFailed(TrtcasError):
    """A rule raised; the message names the action. ``log`` is the digest of what the rule
    logged before it failed (kept in the cache, for ``trtcas log``)."""

    def __init__(self, message: str, log: Digest | None = None):
        super().__init__(message)
        self.log = log


class ActionObserver(Protocol):
    """Who hears about a running rule: its log lines (``-v`` streams them) and the progress
    it reports (TensorRT's builder phases). The CLI's progress display is one."""

    def log(self, action_id: str, line: str) -> None: ...
    def progress(self, action_id: str, phase: str, step: int, total: int) -> None: ...


class NullObserver:
    def log(self, action_id: str, line: str) -> None:
        pass

    def progress(self, action_id: str, phase: str, step: int, total: int) -> None:
        pass


class StoreRunContext:
    """The RunContext (see graph.rule.RunContext) of a rule running against a local store."""

    def __init__(self, action: Action, store: ContentStore, sources: Mapping[str, Path],
                 digests: Mapping[str, Digest], scratch: Path, previous: Mapping[str, Digest] | None = None,
                 observer: ActionObserver | None = None, prepared: PreparedOutputs | None = None):
        self.action_id = action.id
        self.params = action.params
        self.scratch = scratch
        self.algo = store.algo
        self._store = store
        self._sources = sources
        self._digests = digests
        self._previous = previous or {}
        self.lines: list[str] = []
        self._observer = observer or NullObserver()
        self._placed = frozenset(action.materialize)
        self._prepared = prepared
        self.preparing: dict[str, Path] = {}

    def input_digest(self, name: str) -> Digest:
        return self._digests[name]

    def input_path(self, name: str) -> Path:
        if name in self._sources:
            return self._sources[name]
        path = self.scratch / "inputs" / name
        if not path.exists():
            self._store.blobs.materialize(self._digests[name], path)
        return path

    def input_bytes(self, name: str) -> bytes:
        if name in self._sources:
            return self._sources[name].read_bytes()
        return self._store.blobs.get_bytes(self._digests[name])

    def get_bytes(self, digest: Digest) -> bytes:
        return self._store.blobs.get_bytes(digest)

    def get_view(self, digest: Digest) -> memoryview:
        """A blob's content, verified, read-only, without a copy (mapped or decoded)."""
        return self._store.blobs.content_view(digest)

    def open_blob(self, digest: Digest) -> BinaryIO:
        return self._store.blobs.open(digest)

    def put_bytes(self, data: bytes) -> Digest:
        return self._store.blobs.put_bytes(data)

    def put_file(self, path: Path) -> Digest:
        return self._store.blobs.put_file(path)

    def put_tensor(self, data: Any, dtype: str | None = None, parent: Digest | None = None) -> Digest:
        return self._store.blobs.put_tensor(data, dtype, parent)

    def put_tensors(self, items: Any) -> Any:
        """``put_tensor`` for a stream of (data, dtype, parent), encoded two at a time."""
        return self._store.blobs.put_tensors(items)

    def previous_output(self, name: str) -> Digest | None:
        return self._previous.get(name)

    def prepare_output(self, name: str) -> Path | None:
        """Where to write output ``name`` in its placed form (e.g. the ``.safetensors``
        file a tensor manifest is placed as) while the rule runs, or None when this build
        does not place it here. A file written there is moved into the output dir instead
        of being written again from the store; it must be byte for byte what the output's
        format would write (``graph.prepared``)."""
        if self._prepared is None or not self._prepared.enabled or name not in self._placed:
            return None
        try:
            path = self._prepared.new_path()
        except OSError:  # its directory cannot be made (a read-only parent): placement says so, clearly
            return None
        self.preparing[name] = path
        return path

    def log(self, message: str) -> None:
        self.lines.append(message)
        self._observer.log(self.action_id, message)

    def progress(self, phase: str, step: int, total: int) -> None:
        """Step ``step`` of ``total`` of a named phase (a bar on the terminal)."""
        self._observer.progress(self.action_id, phase, step, total)

    def cancelled(self) -> bool:
        """True once the build was cancelled: a long-running rule should stop."""
        return cancel_requested()


def run_invocation(action: Action, key: ActionKey, digests: Mapping[str, Digest], sources: Mapping[str, Path],
                   store: ContentStore, registry: RuleRegistry, previous: Mapping[str, Digest] | None = None,
                   observer: ActionObserver | None = None, prepared: PreparedOutputs | None = None) -> ActionResult:
    """Run ``action``'s rule against ``store``; store its outputs and log; return the result
    (not yet recorded in the action cache: the caller does that under the key lock). A rule
    that fails still leaves its log in the store (``ActionFailed.log``)."""
    rule = registry.get(action.rule)
    store.layout.tmp_root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="run-", dir=store.layout.tmp_root))
    track_scratch(scratch)
    context = StoreRunContext(action, store, sources, digests, scratch, previous, observer, prepared)
    start = time.perf_counter()
    try:
        try:
            with store.blobs.batch():  # one flush for all the action's blobs, before its entry is recorded
                produced = rule.run(context)
                outputs = {name: _store_output(store, value, scratch) for name, value in produced.items()}
            _check_sources_unchanged(store, sources, digests)
            _offer_prepared(context, outputs, prepared)
        except BuildCancelled:
            raise
        except Exception as exc:
            raise _failure(exc, context, store) from exc
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        untrack_scratch(scratch)
    log_digest = _store_log(store, context.lines)
    metadata = {"action_id": action.id, "rule": rule.name, "rule_version": rule.version}
    return ActionResult(
        outputs=outputs, duration_s=time.perf_counter() - start,
        fingerprint=key.components.get("env", {}), log=log_digest, metadata=metadata,
    )


def _offer_prepared(context: StoreRunContext, outputs: Mapping[str, Digest], prepared: PreparedOutputs | None) -> None:
    for name, path in context.preparing.items():
        if prepared is not None and name in outputs and path.is_file():
            prepared.offer(path, outputs[name])


def _store_log(store: ContentStore, lines: list[str]) -> Digest | None:
    return store.blobs.put_bytes("\n".join(lines).encode()) if lines else None


def _failure(exc: Exception, context: StoreRunContext, store: ContentStore) -> ActionFailed:
    """The rule's error with its log kept; an unexpected exception keeps its traceback
    in that log (the one-line message stays readable)."""
    if isinstance(exc, TrtcasError):
        message = str(exc)
    elif isinstance(exc, (OSError, MemoryError)):  # a full disk, a permission, too little memory
        message = describe_resource_error(exc, unnamed=f"a file of this action (under {store.root} or the output dir)")
    else:
        context.lines.append("".join(traceback.format_exception(exc)).rstrip())
        message = f"{type(exc).__name__}: {exc}"
    try:
        log = _store_log(store, context.lines)
    except Exception:  # a full disk must not hide the rule's own error
        log = None
    return ActionFailed(message, log=log)


def _store_output(store: ContentStore, value: Any, scratch: Path) -> Digest:
    if isinstance(value, Digest):
        if not store.blobs.has(value):
            raise ActionFailed(f"rule returned {value} but never stored it")
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return store.blobs.put_bytes(value)  # no copy: an engine plan can be as large as the model
    if isinstance(value, Path):  # one in the action's scratch dir is the rule's to give away: moved, not copied
        return store.blobs.put_file(value, consume=scratch in value.parents)
    raise ActionFailed(f"rule returned an output of type {type(value).__name__}; expected bytes, Path or Digest")


def _check_sources_unchanged(store: ContentStore, sources: Mapping[str, Path], digests: Mapping[str, Digest]) -> None:
    """A source edited while the rule read it would make the output disagree with its key."""
    for name, path in sources.items():
        if source_digest(path, store.statcache, store.algo) != digests[name]:
            raise ActionFailed(f"input {path} changed while the action ran; nothing was cached, build again")


