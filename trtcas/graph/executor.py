"""Run a graph of actions: skip what is cached, run the rest once, in parallel.

Per action: resolve input digests (sources through the stat cache, upstream outputs from
their results), compute the key, and then, in this order,
  1. the same key already started in this build -> wait for it, status ``shared``;
  2. the action cache (local, then remote) has it -> ``cached`` / ``remote``;
  3. otherwise take the per-key file lock (so two processes never build one key twice),
     look again (the other process may have just finished), and run the rule.
A rule's outputs are stored before its action-cache entry is written, and nothing is
written when it fails, so a failed action leaves no trace and the next build retries it.
"""

from __future__ import annotations

import fcntl
import os
import logging
import shutil
import tempfile
import threading
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Protocol

import networkx as nx

from trtcas.cas.actioncache import ActionResult
from trtcas.cas.blobstore import BlobNotFound
from trtcas.cas.content_store import ContentStore
from trtcas.cas.tiered import TieredStore
from trtcas.cas.digest import Digest
from trtcas.cas.tree import source_digest
from trtcas.errors import TrtcasError
from trtcas.graph.action import Action, ActionKey, compute_key
from trtcas.graph.fingerprint import Fingerprint, collect_fingerprint
from trtcas.graph.records import Span
from trtcas.graph.result import ActionRecord
from trtcas.graph.rule import REGISTRY, Rule, RuleRegistry

log = logging.getLogger(__name__)


class ActionFailed(TrtcasError):
    """A rule raised; the message names the action."""


class ActionCacheTier(Protocol):
    """Where action results are looked up and recorded (cas.tiered.TieredStore: the local
    store, then an optional remote)."""

    warnings: list[str]

    def lookup(self, key: Digest) -> tuple[ActionResult, str] | None: ...
    def record(self, key: Digest, result: ActionResult) -> None: ...


class Reporter(Protocol):
    def started(self, action: Action) -> None: ...
    def finished(self, record: ActionRecord) -> None: ...


class NullReporter:
    def started(self, action: Action) -> None:
        pass

    def finished(self, record: ActionRecord) -> None:
        pass


class _RunContext:
    """The RunContext a rule sees while it runs (see graph.rule.RunContext)."""

    def __init__(self, action: Action, store: ContentStore, sources: Mapping[str, Path], digests: Mapping[str, Digest], scratch: Path):
        self.action_id = action.id
        self.params = action.params
        self.scratch = scratch
        self.store = store
        self._sources = sources
        self._digests = digests
        self.lines: list[str] = []

    def input_digest(self, name: str) -> Digest:
        return self._digests[name]

    def input_path(self, name: str) -> Path:
        if name in self._sources:
            return self._sources[name]
        path = self.scratch / "inputs" / name
        if not path.exists():
            self.store.blobs.materialize(self._digests[name], path)
        return path

    def input_bytes(self, name: str) -> bytes:
        if name in self._sources:
            return self._sources[name].read_bytes()
        return self.store.blobs.get_bytes(self._digests[name])

    def put_bytes(self, data: bytes) -> Digest:
        return self.store.blobs.put_bytes(data)

    def put_file(self, path: Path) -> Digest:
        return self.store.blobs.put_file(path)

    def log(self, message: str) -> None:
        self.lines.append(message)


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


class Executor:
    def __init__(
        self,
        store: ContentStore,
        base_dir: Path,
        jobs: int = 1,
        fingerprint: Fingerprint | None = None,
        tier: ActionCacheTier | None = None,
        reporter: Reporter | None = None,
        registry: RuleRegistry = REGISTRY,
    ):
        self.store = store
        self.base_dir = Path(base_dir)
        self.jobs = max(1, jobs)
        self.fingerprint = fingerprint or collect_fingerprint()
        self.tier = tier or TieredStore(store)
        self.reporter = reporter or NullReporter()
        self.registry = registry
        self._inflight: dict[str, Future] = {}
        self._inflight_lock = threading.Lock()
        self._outcomes: dict[str, Outcome] = {}
        self._source_digests: dict[Path, Digest] = {}
        self.spans: list[Span] = []
        self._worker_ids: dict[int, int] = {}

    # ---- scheduling -------------------------------------------------------------------
    def execute(self, graph: nx.DiGraph, dry_run: bool = False) -> list[ActionRecord]:
        """Run every action of ``graph``; returns records in a topological order."""
        order = list(nx.lexicographical_topological_sort(graph))
        waiting = {n: set(graph.predecessors(n)) for n in order}
        ready = [n for n in order if not waiting[n]]
        records: dict[str, ActionRecord] = {}
        failed = False
        with ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="trtcas") as pool:
            running: dict[Future, str] = {}
            while ready or running:
                while ready and not failed and len(running) < self.jobs:
                    node = ready.pop(0)
                    running[pool.submit(self._timed, graph.nodes[node]["action"], dry_run)] = node
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=lambda f: running[f]):
                    node = running.pop(future)
                    record = future.result()
                    records[node] = record
                    self.reporter.finished(record)
                    if record.status == "failed":
                        failed = True
                        continue
                    for succ in sorted(graph.successors(node)):
                        waiting[succ].discard(node)
                        if not waiting[succ]:
                            ready.append(succ)
        for node in order:
            if node not in records:
                action = graph.nodes[node]["action"]
                records[node] = ActionRecord(action.id, action.rule, "skipped", reason="a dependency failed")
                self.reporter.finished(records[node])
        return [records[n] for n in order]

    def _timed(self, action: Action, dry_run: bool) -> ActionRecord:
        self.reporter.started(action)
        start = time.perf_counter()
        try:
            outcome = self._execute_one(action, dry_run)
        except Exception as exc:
            seconds = time.perf_counter() - start
            message = str(exc) if isinstance(exc, TrtcasError) else f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, TrtcasError):
                log.debug("action %s crashed:\n%s", action.id, traceback.format_exc())
            self._span(action, "failed", start)
            lost_blob = isinstance(exc, BlobNotFound) or isinstance(exc.__cause__, BlobNotFound)
            return ActionRecord(action.id, action.rule, "failed", seconds, error=f"{action.id}: {message}", retryable=lost_blob)
        self._outcomes[action.id] = outcome
        self._span(action, outcome.status, start)
        outputs = {n: str(d) for n, d in outcome.result.outputs.items()} if outcome.result else {}
        return ActionRecord(
            action.id, action.rule, outcome.status, time.perf_counter() - start,
            key=str(outcome.key) if outcome.key else None,
            inputs={n: str(d) for n, d in outcome.inputs.items()}, outputs=outputs, reason=outcome.reason,
            key_components=outcome.key.components if outcome.key else None,
        )

    def _span(self, action: Action, status: str, start: float) -> None:
        ident = threading.get_ident()
        worker = self._worker_ids.setdefault(ident, len(self._worker_ids))
        offset = time.time() - time.perf_counter()
        self.spans.append(Span(action.id, action.rule, status, start + offset, time.time(), worker))

    # ---- one action -------------------------------------------------------------------
    def _resolve_inputs(self, action: Action) -> tuple[dict[str, Digest], dict[str, Path], str | None]:
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
                return digests, sources, f"input {name!r} comes from {ref.action}, which would build"
            if ref.output not in upstream.result.outputs:
                raise ActionFailed(f"input {name!r} wants output {ref.output!r} of {ref.action}, which has only {sorted(upstream.result.outputs)}")
            digests[name] = upstream.result.outputs[ref.output]
        return digests, sources, None

    def key_of(self, action: Action, rule: Rule, digests: Mapping[str, Digest]) -> ActionKey:
        env = self.fingerprint.select(rule.env_fields(action.params))
        keyed = {name: d for name, d in digests.items() if name not in rule.unkeyed_inputs}
        return compute_key(rule.name, rule.version, rule.key_params(action.params), keyed, env, self.store.algo)

    def _execute_one(self, action: Action, dry_run: bool) -> Outcome:
        rule = self.registry.get(action.rule)
        digests, sources, unknown = self._resolve_inputs(action)
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
        try:
            status, result = self._obtain(action, rule, key, digests, sources, dry_run)
        except BaseException as exc:
            mine.set_exception(exc)
            raise
        mine.set_result(result)
        return Outcome(status, key, digests, result)

    def _obtain(self, action, rule, key, digests, sources, dry_run) -> tuple[str, ActionResult | None]:
        hit = self.tier.lookup(key.digest)
        if hit is not None:
            return hit[1], hit[0]
        if dry_run:
            return "would-build", None
        with key_lock(self.store, key.digest):
            again = self.store.actions.get(key.digest, count=False)  # another process may have built it meanwhile
            if again is not None:
                return "cached", again
            result = self._run_rule(action, rule, key, digests, sources)
            self.tier.record(key.digest, result)
            return "built", result

    def _run_rule(self, action, rule, key, digests, sources) -> ActionResult:
        scratch = Path(tempfile.mkdtemp(prefix="run-", dir=self._scratch_root()))
        context = _RunContext(action, self.store, sources, digests, scratch)
        start = time.perf_counter()
        try:
            try:
                produced = rule.run(context)
            except TrtcasError as exc:
                raise ActionFailed(str(exc)) from exc
            outputs = {name: self._store_output(value) for name, value in produced.items()}
            self._check_sources_unchanged(sources, digests)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        log_digest = self.store.blobs.put_bytes("\n".join(context.lines).encode()) if context.lines else None
        metadata = {"action_id": action.id, "rule": rule.name, "rule_version": rule.version}
        return ActionResult(
            outputs=outputs, duration_s=time.perf_counter() - start,
            fingerprint=key.components.get("env", {}), log=log_digest, metadata=metadata,
        )

    def _scratch_root(self) -> Path:
        root = self.store.layout.tmp_root
        root.mkdir(parents=True, exist_ok=True)
        return root

    def _store_output(self, value: Any) -> Digest:
        if isinstance(value, Digest):
            if not self.store.blobs.has(value):
                raise ActionFailed(f"rule returned {value} but never stored it")
            return value
        if isinstance(value, (bytes, bytearray, memoryview)):
            return self.store.blobs.put_bytes(bytes(value))
        if isinstance(value, Path):
            return self.store.blobs.put_file(value)
        raise ActionFailed(f"rule returned an output of type {type(value).__name__}; expected bytes, Path or Digest")

    def _check_sources_unchanged(self, sources: Mapping[str, Path], digests: Mapping[str, Digest]) -> None:
        """A source edited while the rule read it would make the output disagree with its key."""
        for name, path in sources.items():
            now = source_digest(path, self.store.statcache, self.store.algo)
            if now != digests[name]:
                raise ActionFailed(f"input {path} changed while the action ran; nothing was cached, build again")
