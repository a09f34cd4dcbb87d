"""One action, start to finish: resolve inputs, key, look up, lock, run, record.

Per action: resolve input digests (sources through the stat cache, upstream outputs from
their results), compute the key, and then, in this order,
  1. the same key already started in this build -> wait for it, status ``shared``;
  2. the action cache (local, then remote) has it -> ``cached`` / ``remote``;
  3. otherwise take the per-key file lock (so two processes never build one key twice),
     look again (the other process may have just finished), and have the rule run.
A rule's outputs are stored before its action-cache entry is written, and nothing is
written when it fails, so a failed action leaves no trace and the next build retries it.

*Where* the rule runs is not decided here: the runner hands an ``Invocation`` (everything
the rule needs, picklable) to an ``invoke`` function that a scheduler supplies; by default
``run_invocation`` in this process. So keys, hits and locks are always decided on the
calling host, whichever scheduler runs the misses.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import threading
import time
import traceback
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Collection, Iterator, Mapping, Protocol

from trtcas.cas import mapped_files
from trtcas.cas.actioncache import ActionResult, entry_problem
from trtcas.cas.blobstore import BlobNotFound
from trtcas.cas.content_store import ContentStore
from trtcas.cas.digest import Digest
from trtcas.cas.tiered import TieredStore
from trtcas.cas.tree import source_digest
from trtcas.errors import TrtcasError
from trtcas.graph.action import Action, ActionKey, compute_key
from trtcas.graph.context import ActionFailed, ActionObserver, NullObserver, run_invocation
from trtcas.graph.fingerprint import Fingerprint, collect_fingerprint
from trtcas.graph.interrupt import BuildCancelled, raise_if_cancelled
from trtcas.graph.prepared import PreparedOutputs
from trtcas.graph.records import Span
from trtcas.graph.result import ActionRecord
from trtcas.graph.rule import RULES, Rule, RuleRegistry
from trtcas.oserrors import describe_resource_error

log = logging.getLogger(__name__)


class ActionCacheTier(Protocol):
    """Where action results are looked up and recorded (cas.tiered.TieredStore: the local
    store, then an optional remote)."""

    warnings: list[str]

    def lookup(self, key: Digest, outputs: Collection[str] = ()) -> tuple[ActionResult, str] | None: ...
    def record(self, key: Digest, result: ActionResult) -> None: ...


@dataclass(frozen=True)
class Invocation:
    """Everything needed to run one action's rule, on this host or another: picklable.

    ``sources`` are absolute paths of source inputs (a remote worker must see the same
    files, or fetch them by digest); ``inputs`` holds every input's digest.
    """

    action: Action
    key: ActionKey
    inputs: Mapping[str, Digest]
    sources: Mapping[str, str] = field(default_factory=dict)
    # This action's outputs in the target's last build: hints for storing the new ones
    # (a fine-tuned tensor as a delta against its previous version); never keyed.
    previous_outputs: Mapping[str, Digest] = field(default_factory=dict)


# Runs a rule somewhere and returns its result, its outputs already in the store the
# runner reads from (the local one, or a remote that the tier fetches from).
Invoke = Callable[[Invocation], ActionResult]


@dataclass(frozen=True)
class Outcome:
    """What running (or skipping) one action produced, before it becomes a record."""

    status: str
    key: ActionKey | None
    inputs: Mapping[str, Digest]
    result: ActionResult | None = None
    reason: str | None = None


@contextmanager
def key_lock(store: ContentStore, key: Digest) -> Iterator[None]:
    """An exclusive flock per action key, shared by every process using this cache."""
    path = store.layout.lock(key.hex)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class ActionRunner:
    """Runs single actions of one build against one store; thread-safe.

    Holds what one build shares between its actions: upstream outcomes, the in-build
    dedup table (two actions with one key run once) and the source digests already taken.
    """

    def __init__(
        self,
        store: ContentStore,
        base_dir: Path,
        fingerprint: Fingerprint | None = None,
        tier: ActionCacheTier | None = None,
        registry: RuleRegistry = RULES,
        previous_outputs: Mapping[str, Mapping[str, Digest]] | None = None,
        observer: ActionObserver | None = None,
        prepared: PreparedOutputs | None = None,
    ):
        self.store = store
        self.prepared = prepared  # outputs rules write in placed form (graph.prepared), local runs only
        self.previous_outputs = previous_outputs or {}
        self.base_dir = Path(base_dir)
        self.fingerprint = fingerprint or collect_fingerprint()
        self.tier = tier or TieredStore(store)
        self.registry = registry
        self.observer = observer or NullObserver()
        self.spans: list[Span] = []
        self._inflight: dict[str, Future] = {}
        self._inflight_lock = threading.Lock()
        self._outcomes: dict[str, Outcome] = {}
        self._source_digests: dict[Path, Digest] = {}
        self._worker_ids: dict[int, int] = {}
        self.node_id: str | None = None  # this host's build-farm node id, when a scheduler has one

    @property
    def source_digests(self) -> dict[Path, Digest]:
        """Every source input read so far in this build, by absolute path."""
        return dict(self._source_digests)

    def local_invoke(self, invocation: Invocation) -> ActionResult:
        return run_invocation(invocation.action, invocation.key, invocation.inputs,
                              {n: Path(p) for n, p in invocation.sources.items()}, self.store, self.registry,
                              invocation.previous_outputs, self.observer, self.prepared)

    # ---- one action, timed and recorded -------------------------------------------------
    def run(self, action: Action, dry_run: bool = False, invoke: Invoke | None = None) -> ActionRecord:
        start = time.perf_counter()
        try:
            outcome = self._outcome(action, dry_run, invoke or self.local_invoke)
        except BuildCancelled:
            self._span(action, "cancelled", start)
            return ActionRecord(action.id, action.rule, "cancelled", time.perf_counter() - start, reason="cancelled")
        except Exception as exc:
            message = str(exc) if isinstance(exc, TrtcasError) else describe_resource_error(exc) \
                if isinstance(exc, (OSError, MemoryError)) else f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, TrtcasError):
                log.debug("action %s crashed:\n%s", action.id, traceback.format_exc())
            self._span(action, "failed", start)
            lost_blob = isinstance(exc, BlobNotFound) or isinstance(exc.__cause__, BlobNotFound)
            return ActionRecord(action.id, action.rule, "failed", time.perf_counter() - start,
                                error=f"{action.id}: {message}", retryable=lost_blob,
                                log=str(exc.log) if getattr(exc, "log", None) else None)
        self._outcomes[action.id] = outcome
        node_id, host, queued = self._where(outcome)
        self._span(action, outcome.status, start, f"{host} {node_id}" if node_id != self.node_id else "")
        outputs = {n: str(d) for n, d in outcome.result.outputs.items()} if outcome.result else {}
        return ActionRecord(
            action.id, action.rule, outcome.status, time.perf_counter() - start,
            key=str(outcome.key) if outcome.key else None,
            inputs={n: str(d) for n, d in outcome.inputs.items()}, outputs=outputs, reason=outcome.reason,
            key_components=outcome.key.components if outcome.key else None,
            log=str(outcome.result.log) if outcome.result and outcome.result.log else None,
            node_id=node_id, host=host, queue_seconds=queued,
        )

    def _where(self, outcome: Outcome) -> tuple[str | None, str, float]:
        """(node id, host, queue seconds) of where the action ran: a farm worker reports it in
        the result of what it built; everything else was decided here."""
        if outcome.status == "built" and outcome.result and outcome.result.metadata.get("node_id"):
            meta = outcome.result.metadata
            return str(meta["node_id"]), outcome.result.host, float(meta.get("queue_seconds", 0.0))
        return self.node_id, socket.gethostname(), 0.0

    def _span(self, action: Action, status: str, start: float, node: str = "") -> None:
        worker = self._worker_ids.setdefault(threading.get_ident(), len(self._worker_ids))
        offset = time.time() - time.perf_counter()
        self.spans.append(Span(action.id, action.rule, status, start + offset, time.time(), worker, node))

    # ---- the steps ------------------------------------------------------------------------
    def resolve_inputs(self, action: Action) -> tuple[dict[str, Digest], dict[str, Path], str | None]:
        """Input digests and source paths, or the reason they cannot be known yet (dry run)."""
        digests: dict[str, Digest] = {}
        sources: dict[str, Path] = {}
        for name, ref in sorted(action.inputs.items()):
            if ref.is_source:
                path = Path(os.path.normpath(os.path.join(self.base_dir, ref.path)))  # no symlink walk: 5x fewer stats
                if path not in self._source_digests:
                    self._source_digests[path] = source_digest(path, self.store.statcache, self.store.algo)
                digests[name], sources[name] = self._source_digests[path], path
                continue
            upstream = self._outcomes[ref.action]
            if upstream.result is None:
                return digests, sources, f"depends on {ref.action}, which would build first (its {ref.output!r} is not known yet)"
            if ref.output not in upstream.result.outputs:
                raise ActionFailed(f"input {name!r} wants output {ref.output!r} of {ref.action}, which has only {sorted(upstream.result.outputs)}")
            digests[name] = upstream.result.outputs[ref.output]
        return digests, sources, None

    def key_of(self, action: Action, rule: Rule, digests: Mapping[str, Digest]) -> ActionKey:
        env = self.fingerprint.select(rule.env_fields(action.params))
        keyed = {name: d for name, d in digests.items() if name not in rule.unkeyed_inputs}
        return compute_key(rule.name, rule.version, rule.key_params(action.params), keyed, env, self.store.algo)

    def _outcome(self, action: Action, dry_run: bool, invoke: Invoke) -> Outcome:
        rule = self.registry.get(action.rule)
        with mapped_files.sharing(active=rule.maps_sources and invoke == self.local_invoke):  # a farm maps its own
            return self._keyed_outcome(action, rule, dry_run, invoke)

    def _keyed_outcome(self, action: Action, rule: Rule, dry_run: bool, invoke: Invoke) -> Outcome:
        digests, sources, unknown = self.resolve_inputs(action)
        if unknown:
            return Outcome("would-build", None, digests, reason=unknown)
        key = self.key_of(action, rule, digests)
        with self._inflight_lock:
            first = self._inflight.get(key.hex)
            if first is None:
                mine: Future = Future()
                self._inflight[key.hex] = mine
        if first is not None:
            result = first.result()
            return Outcome("shared", key, digests, result, reason="same key as another action in this build")
        invocation = Invocation(action, key, digests, {n: str(p) for n, p in sources.items()},
                                self.previous_outputs.get(action.id, {}))
        try:
            status, result = self._obtain(invocation, dry_run, invoke)
        except BaseException as exc:
            mine.set_exception(exc)
            raise
        mine.set_result(result)
        return Outcome(status, key, digests, result)

    def _obtain(self, invocation: Invocation, dry_run: bool, invoke: Invoke) -> tuple[str, ActionResult | None]:
        key = invocation.key.digest
        outputs = self.registry.get(invocation.action.rule).outputs
        hit = self.tier.lookup(key, outputs)
        if hit is not None:
            return hit[1], hit[0]
        if dry_run:
            return "would-build", None
        raise_if_cancelled()
        with key_lock(self.store, key):
            again = self.store.actions.get(key, count=False, outputs=outputs)  # another process may have built it
            if again is not None:
                return "cached", again
            result = invoke(invocation)
            problem = entry_problem(result, outputs)
            if problem:
                raise ActionFailed(f"the rule's result {problem}; nothing was cached (a bug in the rule)")
            self.tier.record(key, result)
            return "built", result
