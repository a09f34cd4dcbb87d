"""``trtcas.build()``: a target file in, a BuildResult out; what ``trtcas build`` calls.

Orchestration only: load the target, plan its graph, execute it, and, if every action
succeeded, materialize the declared outputs, write ``build.json``, pin what the build used
(so gc keeps it) and remember the build for ``explain``. A failed build changes nothing in
the output directory.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from trtcas.cas.atomic import atomic_write_bytes
from trtcas.cas.content_store import ContentStore
from trtcas.cas.digest import Digest
from trtcas.cas.leases import hold_lease
from trtcas.config import DEFAULT_TARGET, Overrides, TargetConfig, load_config
from trtcas.errors import TrtcasError
from trtcas.graph.result import ActionRecord, BuildResult

if TYPE_CHECKING:  # the build engine is imported when a build plans: a no-op answered by its stamp needs none of it
    import networkx as nx

    from trtcas.cas.tiered import TieredStore
    from trtcas.graph.outputs import PlannedOutput
    from trtcas.graph.prepared import PreparedOutputs
    from trtcas.graph.schedulers import Reporter

KEEP_LOGS = 20


def plan_target(config: TargetConfig, wanted: Iterable[str] = ()) -> tuple[nx.DiGraph, tuple[str, ...]]:
    """The (selected) action graph of a target, and the planner's notes."""
    from trtcas.graph.dag import build_graph, plan_actions, select

    planned = plan_actions(config.data, config.base_dir)
    return select(build_graph(planned.actions), wanted), planned.notes


def notes_to_say(planned_notes: tuple[str, ...], for_rules: tuple[str, ...], records: Iterable[ActionRecord]) -> tuple[str, ...]:
    """A planner's notes, only when an action of the rules they concern ran (not on a no-op)."""
    if not for_rules:
        return planned_notes
    ran = any(r.rule in for_rules and r.status in ("built", "failed", "would-build") for r in records)
    return planned_notes if ran else ()


def check_writable(path: Path, what: str, fix: str) -> None:
    """Fail before any build when ``path`` (a file or dir to be written) cannot be: a file is
    created and removed in the nearest existing directory (permission bits say nothing to
    root, nor about /proc or a read-only mount)."""
    path = Path(path).absolute()
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe == path and path.is_dir() != (what == "output dir"):
        kind = "a directory" if path.is_dir() else "a file"
        raise TrtcasError(f"{what} {path} is {kind}; {fix}")
    if probe != path and not probe.is_dir():
        raise TrtcasError(f"{what} {path} cannot be created: {probe} is a file, not a directory; {fix}")
    folder = probe if probe.is_dir() else probe.parent
    import tempfile  # only where a dir must be checked writable (not on a no-op)

    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as exc:
        from trtcas.oserrors import describe_os_error

        raise TrtcasError(f"{what} {path} cannot be written: {describe_os_error(exc)}") from None


def plan_graph(config: TargetConfig, wanted: Iterable[str] = ()) -> nx.DiGraph:
    return plan_target(config, wanted)[0]


def make_tier(store: ContentStore, remote: str | None, remote_upload: bool) -> TieredStore:
    """The local store, in front of ``remote`` (a Bazel-style HTTP cache URL) if given."""
    from trtcas.cas.tiered import TieredStore

    if not remote:
        return TieredStore(store)
    from trtcas.cas.remote import open_remote

    deadline = store.settings.remote_deadline_s
    return TieredStore(store, open_remote(remote, store.algo, deadline_s=deadline), upload=remote_upload)


def build(
    target: str | Path = DEFAULT_TARGET,
    actions: Iterable[str] = (),
    *,
    cache_dir: str | Path | None = None,
    jobs: int = 2,
    scheduler: str | None = None,
    scheduler_address: str | None = None,
    dry_run: bool = False,
    profile: str | Path | None = None,
    overrides: Overrides = (),
    remote: str | None = None,
    remote_upload: bool = True,
    fingerprint_overrides: Mapping[str, Any] | None = None,
    reporter: Reporter | None = None,
) -> BuildResult:
    """Build ``target`` (a trtcas.toml) incrementally; see BuildResult for what comes back.

    ``overrides`` change target-file values: ``{"engine.optimization_level": 5}`` or
    ``["engine.optimization_level=5"]`` (as ``--set``). ``reporter`` hears about actions
    starting and finishing, and, if it has ``log``/``progress`` methods, about what they log
    and how far they are (see graph.context.ActionObserver); with ``planned``, how many
    actions the build has.

    The build holds a lease on the cache while it runs (gc keeps what it uses), and after a
    successful build the cache is trimmed to its ``max-size`` when that is set."""
    from trtcas.graph.interrupt import reset_cancel
    reset_cancel()
    config = load_config(target, overrides, check=False)
    store = ContentStore(cache_dir)
    stamp_key = None
    actions = tuple(actions)
    if not dry_run and not remote and not profile:
        from trtcas.graph import stamp

        stamp_key = stamp.environment_key(config.data, {
            "target": str(config.path), "fingerprint_overrides": fingerprint_overrides or {}, "actions": sorted(actions)})
        unchanged = _answer_from_stamp(store, config, stamp_key, reporter, actions)
        if unchanged is not None:
            return unchanged
    from trtcas.config import check_config
    from trtcas.graph.schedulers import execution_settings

    check_config(config.data, overrides, config.path)
    scheduler, scheduler_address = execution_settings(config.data.get("execution"), scheduler, scheduler_address)
    if not dry_run:
        check_writable(config.output_dir, "output dir", "set [output] dir to a directory you can write")
    if profile:
        check_writable(Path(profile), "--profile file", "name a file in a directory you can write")
    with hold_lease(store):
        result = _build_leased(config, store, actions, jobs=jobs, scheduler=scheduler,
                               scheduler_address=scheduler_address, dry_run=dry_run,
                               profile=profile, remote=remote, remote_upload=remote_upload,
                               fingerprint_overrides=fingerprint_overrides, reporter=reporter, stamp_key=stamp_key)
    if result.ok and not dry_run:
        from trtcas.cas.gc import run_auto_gc

        trimmed = run_auto_gc(store)
        if trimmed is not None and trimmed.size_after > trimmed.max_size:
            result = dataclasses.replace(result, warnings=result.warnings + (
                f"the cache is over its max-size ({trimmed.size_after} > {trimmed.max_size} bytes) with only "
                "pinned, recent or in-use entries left; raise it (`trtcas cache config max-size`) or unpin targets",))
    return result


def _answer_from_stamp(store: ContentStore, config: TargetConfig, key: str, reporter: Reporter | None,
                       actions: tuple[str, ...] = ()) -> BuildResult | None:
    """The answer of a build whose stamp still holds (``graph.stamp``): every action cached,
    outputs in place. What a full build would also do is done: entries are touched (LRU),
    hits counted, the pin refreshed, the build remembered for explain."""
    from trtcas.graph import stamp as stamps

    start = time.perf_counter()
    found = stamps.unchanged(store, config.slug, key, actions)
    if found is None:
        return None
    records = [dataclasses.replace(ActionRecord.from_dict(r), status="cached", seconds=0.0, reason=None)
               for r in found.records]
    now = time.time()
    for record in records:
        if record.key:
            try:
                os.utime(store.layout.action_entry(Digest.parse(record.key).hex), (now, now))
            except OSError:
                return None  # evicted meanwhile: the full build will say what to do
        if reporter is not None:
            if hasattr(reporter, "planned") and record is records[0]:
                reporter.planned(len(records))
            reporter.started(record)
            reporter.finished(record)
    store.counters.add("hit", len(records))
    store.counters.flush()
    used = [Digest.parse(d) for r in records for d in r.outputs.values()]
    store.pins.pin(config.slug, [Digest.parse(r.key).hex for r in records if r.key], used, name=config.name)
    _remember(store, config, records)
    return BuildResult(target=config.name, ok=True, seconds=time.perf_counter() - start, actions=tuple(records),
                       outputs=dict(found.placed))


def _remember(store: ContentStore, config: TargetConfig, records: list[ActionRecord]) -> None:
    from trtcas.graph.history import save_build

    save_build(store.root, config.slug, records)
    write_logs(store, config, records)


def _build_leased(config: TargetConfig, store: ContentStore, actions: Iterable[str], *, jobs, scheduler,
                  scheduler_address, dry_run,
                  profile, remote, remote_upload, fingerprint_overrides, reporter, stamp_key=None) -> BuildResult:
    from trtcas.cas.blobstore import BlobNotFound
    from trtcas.graph import stamp
    from trtcas.graph.context import NullObserver
    from trtcas.graph.dag import build_graph, plan_actions, select
    from trtcas.graph.fingerprint import collect_fingerprint
    from trtcas.graph.prepared import PreparedOutputs
    from trtcas.graph.records import write_trace
    from trtcas.graph.runner import ActionRunner
    from trtcas.graph.schedulers import NullReporter, open_scheduler

    start = time.perf_counter()
    created_ns = time.time_ns()
    with stamp.watch_reads() as planner_reads:
        planned = plan_actions(config.data, config.base_dir)
        graph = select(build_graph(planned.actions), actions)
    if hasattr(reporter, "planned"):
        reporter.planned(graph.number_of_nodes())
    fingerprint = collect_fingerprint().with_overrides(fingerprint_overrides or {})
    tier = make_tier(store, remote, remote_upload)
    warnings: list[str] = []
    observer = reporter if hasattr(reporter, "log") and hasattr(reporter, "progress") else NullObserver()
    for attempt in (1, 2):  # a second pass only after a cached blob proved corrupt (now a miss)
        prepared = PreparedOutputs(store.layout.tmp_root, config.output_dir)
        runner = ActionRunner(store, config.base_dir, fingerprint=fingerprint, tier=tier,
                              previous_outputs=previous_outputs(store, config), observer=observer, prepared=prepared)
        pool = open_scheduler(scheduler, jobs=jobs, address=scheduler_address, remote=remote, remote_upload=remote_upload)
        outputs: dict[str, str] = {}
        try:
            records = pool.execute(graph, runner, dry_run, reporter or NullReporter())
            failed = [r for r in records if r.status in ("failed", "cancelled")]
            try:
                if not failed and not dry_run:
                    outputs = materialize_outputs(store, graph, records, config.output_dir, config,
                                                  fingerprint.to_dict(), prepared)
            except TrtcasError as exc:  # BlobNotFound: a stored blob proved bad, so build again
                failed = [ActionRecord("materialize", "-", "failed", error=str(exc),
                                       retryable=isinstance(exc, BlobNotFound))]
        finally:
            prepared.close()
        if attempt == 1 and failed and all(r.retryable for r in failed):
            warnings.append(f"{failed[0].error}; building again without it")
            continue
        break
    warnings += tier.warnings
    store.counters.flush()
    if not failed and not dry_run:
        used = [Digest.parse(d) for r in records for d in r.outputs.values()]
        store.pins.pin(config.slug, [Digest.parse(r.key).hex for r in records if r.key], used, name=config.name)
    if not dry_run:
        _remember(store, config, records)
        if stamp_key is not None and not failed:
            output_files = [Path(p) for p in outputs] + [config.output_dir / "build.json"]
            stamp.write_stamp(store, config.slug, stamp_key, created_ns, planner_reads, runner.source_digests,
                              [r.to_dict(with_components=True) for r in records], outputs, output_files, actions)
        elif stamp_key is not None:
            stamp.forget_stamp(store, config.slug, actions)
    if profile:
        write_trace(profile, runner.spans, time.time() - (time.perf_counter() - start))
    return BuildResult(
        target=config.name, ok=not failed, seconds=time.perf_counter() - start, actions=tuple(records),
        outputs=outputs, warnings=tuple(warnings), notes=notes_to_say(planned.notes, planned.notes_for_rules, records),
        error=(failed[0].error or failed[0].reason) if failed else None,
        dry_run=dry_run,
    )


def run(
    target: str | Path = DEFAULT_TARGET,
    tokens: Iterable[int] | None = None,
    inputs: Mapping[str, Any] | None = None,
    *,
    cache_dir: str | Path | None = None,
    jobs: int = 2,
    overrides: Overrides = (),
    remote: str | None = None,
    fingerprint_overrides: Mapping[str, Any] | None = None,
):
    """Evaluate the networks of every rank of ``target`` on ``tokens`` (LLM targets) or
    ``inputs`` (name -> array), in numpy, collectives simulated: a check of what the engines
    are built from, on any machine. The network actions (and what they need) are built or
    taken from the cache; nothing is written to the output dir and the build history is left
    as it is. Returns a ``RunResult`` (``.logits``, ``.argmax``, ``.outputs``, ``.to_dict()``)."""
    from trtcas.graph.fingerprint import collect_fingerprint
    from trtcas.graph.runner import ActionRunner
    from trtcas.graph.schedulers import NullReporter, open_scheduler
    from trtcas.rules.evaluate.run import evaluate_target

    config = load_config(target, overrides)
    graph, _ = plan_target(config, ("trt.network",))
    store = ContentStore(cache_dir)
    fingerprint = collect_fingerprint().with_overrides(fingerprint_overrides or {})
    runner = ActionRunner(store, config.base_dir, fingerprint=fingerprint, tier=make_tier(store, remote, False))
    records = open_scheduler("threads", jobs=jobs).execute(graph, runner, False, NullReporter())
    store.counters.flush()
    failed = [r for r in records if r.status == "failed"]
    if failed:
        raise TrtcasError(failed[0].error or f"{failed[0].id} failed")
    return evaluate_target(store, config.base_dir, graph, {r.id: r for r in records},
                           tokens=None if tokens is None else list(tokens), feeds=inputs)


def previous_outputs(store: ContentStore, config: TargetConfig) -> dict[str, dict[str, Digest]]:
    """Action id -> its outputs in this target's last build (delta parents for fine-tunes)."""
    from trtcas.graph.history import load_build

    last = load_build(store.root, config.slug) or {}
    previous: dict[str, dict[str, Digest]] = {}
    for action_id, record in last.items():
        try:
            previous[action_id] = {n: Digest.parse(d) for n, d in (record.get("outputs") or {}).items()}
        except (TrtcasError, AttributeError, TypeError):
            continue
    return previous


def planned_outputs(graph: nx.DiGraph, records: list[ActionRecord]) -> list[PlannedOutput]:
    """The declared outputs of a build's actions, each in its rule's output format."""
    from trtcas.graph.outputs import PlannedOutput
    from trtcas.graph.rule import RULES

    planned = []
    for record in records:
        action = graph.nodes[record.id]["action"]
        formats = RULES.get(action.rule).output_formats
        for output, relative in action.materialize.items():
            planned.append(PlannedOutput(str(relative), Digest.parse(record.outputs[output]), formats.get(output, "file")))
    return planned


def materialize_outputs(store: ContentStore, graph: nx.DiGraph, records: list[ActionRecord], output_dir: Path,
                        config: TargetConfig | None = None, fingerprint: Mapping[str, Any] | None = None,
                        prepared: PreparedOutputs | None = None) -> dict[str, str]:
    """Place declared outputs under ``output_dir`` (and, given ``config``, ``build.json``)
    as one transaction: all of them or, on any failure, none (``graph.outputs``); an output
    already in place (a no-op build) is left alone; one a rule prepared is moved in."""
    from trtcas.graph.outputs import place_outputs

    planned = planned_outputs(graph, records)
    files = {}
    if config is not None:
        placed = {str(output_dir / p.relative): str(p.digest) for p in planned}
        files["build.json"] = build_json_bytes(config, records, placed, fingerprint or {})
    return place_outputs(store.blobs, store.statcache, output_dir, planned, files,
                         keep_inside=config.base_dir if config is not None else None, prepared=prepared)


def write_build_json(config: TargetConfig, records: list[ActionRecord], outputs: Mapping[str, str], fingerprint: Mapping[str, Any]) -> None:
    """What was built, from what, where: enough to reproduce or audit the outputs."""
    atomic_write_bytes(config.output_dir / "build.json", build_json_bytes(config, records, outputs, fingerprint))


def build_json_bytes(config: TargetConfig, records: list[ActionRecord], outputs: Mapping[str, str], fingerprint: Mapping[str, Any]) -> bytes:
    """``build.json``: what was built, from what, where."""
    from trtcas import __version__  # noqa: PLC0415 (trtcas imports this module)

    wire = {
        "target": config.name,
        "target_file": str(config.path),
        "trtcas_version": __version__,
        "fingerprint": fingerprint,
        "actions": {r.id: {"rule": r.rule, "key": r.key, "status": r.status, "inputs": dict(r.inputs), "outputs": dict(r.outputs)} for r in records},
        "outputs": {str(Path(p).relative_to(config.output_dir)): d for p, d in outputs.items()},
    }
    return json.dumps(wire, indent=2, sort_keys=True).encode()


def write_logs(store: ContentStore, config: TargetConfig, records: list[ActionRecord]) -> Path:
    from trtcas.graph.records import write_execution_log

    folder = store.layout.logs_dir(config.slug)
    path = folder / f"{time.strftime('%Y%m%dT%H%M%S')}-{time.time_ns() % 10**9:09d}.jsonl"
    write_execution_log(path, records)
    for old in sorted(folder.glob("*.jsonl"))[:-KEEP_LOGS]:
        old.unlink(missing_ok=True)
    return path
