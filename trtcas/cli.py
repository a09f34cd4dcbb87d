"""The ``trtcas`` command.

Every user-caused failure arrives here as a ``TrtcasError`` and leaves as one line on
stderr and exit status 1; ``--cache-dir`` is accepted by every command, before or after
its own arguments.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

import click

from trtcas.errors import TrtcasError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def format_size(n: int | float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def cache_dir_option(func):
    return click.option(
        "--cache-dir",
        type=click.Path(path_type=Path),  # not file_okay=False: a file here gets our one-line error
        envvar="TRTCAS_CACHE_DIR",
        default=None,
        help="Cache directory (default: $TRTCAS_CACHE_DIR, else ~/.cache/trtcas).",
    )(func)


def open_store(cache_dir: Path | None):
    from trtcas.cas.content_store import ContentStore

    return ContentStore(cache_dir)


def echo_json(data) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


@click.group(context_settings=CONTEXT)
@click.version_option(package_name="trtcas")
def cli() -> None:
    """A content-addressed build cache for TensorRT and TensorRT-LLM engines."""


# ---- trtcas cache ... ------------------------------------------------------------------
@cli.group()
def cache() -> None:
    """Inspect and maintain the local cache."""


@cache.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@cache_dir_option
def stats(as_json: bool, cache_dir: Path | None) -> None:
    """Counts, bytes on disk vs logical bytes, compression savings, hit rate."""
    from trtcas.cas.stats import store_stats

    result = store_stats(open_store(cache_dir))
    if as_json:
        echo_json(result.to_dict())
        return
    rate = "n/a" if result.hit_rate is None else f"{result.hit_rate:.1%} ({result.hits} hits, {result.misses} misses)"
    rows = [
        ("cache dir", result.cache_dir),
        ("hash", result.algo),
        ("blobs", f"{result.blobs} ({result.raw_blobs} raw, {result.zstd_blobs} zstd, {result.codec_blobs} weight codec)"),
        ("on disk", format_size(result.disk_bytes)),
        ("logical", format_size(result.logical_bytes)),
        ("codecs saved", format_size(result.compression_saved_bytes)),
        ("delta saved", f"{format_size(result.delta_saved_bytes)} ({result.delta_blobs} fine-tuned tensors as deltas)"),
        ("actions", f"{result.actions} ({format_size(result.action_bytes)})"),
        ("pinned targets", str(result.pins)),
        ("quarantined", str(result.quarantined)),
        ("hit rate", rate),
    ]
    for name, value in rows:
        click.echo(f"{name:>15}  {value}")


@cache.command()
@click.option("--max-size", required=True, help="Evict least-recently-used entries down to this size, e.g. 50G.")
@click.option("--dry-run", is_flag=True, help="Show what would be evicted; remove nothing.")
@click.option("--min-age", default=None, metavar="DURATION",
              help="Keep anything used more recently than this, e.g. 0 or 15m (default: the cache's gc-min-age).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@cache_dir_option
def gc(max_size: str, dry_run: bool, min_age: str | None, as_json: bool, cache_dir: Path | None) -> None:
    """Evict LRU action entries and blobs down to a size cap; pinned builds, recent entries
    and whatever running builds use are kept."""
    from trtcas.cas.gc import execute_gc, parse_size, plan_gc
    from trtcas.cas.settings import parse_duration

    store = open_store(cache_dir)
    plan = plan_gc(store, parse_size(max_size), None if min_age is None else parse_duration(min_age))
    freed = 0 if dry_run else execute_gc(store, plan)
    if as_json:
        echo_json({
            "max_size": plan.max_size, "size_before": plan.size_before, "size_after": plan.size_after,
            "evicted_actions": len(plan.evict_actions), "evicted_blobs": len(plan.evict_blobs),
            "bytes_freed": freed, "dry_run": dry_run,
        })
        return
    verb = "would evict" if dry_run else "evicted"
    click.echo(
        f"{verb} {len(plan.evict_actions)} actions and {len(plan.evict_blobs)} blobs, "
        f"{format_size(plan.bytes_freed)}; {format_size(plan.size_before)} -> {format_size(plan.size_after)} "
        f"(cap {format_size(plan.max_size)}; {plan.pinned_actions} pinned actions kept)"
    )
    if plan.size_after > plan.max_size:
        click.echo("note: pinned entries alone exceed the cap; they are kept", err=True)


@cache.command()
@click.option("--repair", is_flag=True, help="Quarantine bad blobs, drop dangling action entries, clean temp files.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@cache_dir_option
def verify(repair: bool, as_json: bool, cache_dir: Path | None) -> None:
    """Re-hash every blob; report (and with --repair, remove) anything that does not match."""
    from trtcas.cas.gc import verify_store
    from trtcas.progress import byte_progress

    store = open_store(cache_dir)
    with byte_progress("verifying", enabled=not as_json) as advance:
        report = verify_store(store, repair=repair, progress=advance)
    if as_json:
        echo_json({
            "blobs_checked": report.blobs_checked, "bad_blobs": [list(b) for b in report.bad_blobs],
            "dangling_actions": list(report.dangling_actions), "stale_temp_files": report.stale_temp_files,
            "repaired": report.repaired, "ok": report.ok,
        })
    else:
        for digest, reason in report.bad_blobs:
            click.echo(f"bad blob {digest}: {reason}" + (" (quarantined)" if repair else ""))
        for key in report.dangling_actions:
            click.echo(f"action {key[:12]} names a missing or bad blob" + (" (removed)" if repair else ""))
        status = "ok" if report.ok else ("repaired" if repair else "problems found; run with --repair")
        click.echo(f"checked {report.blobs_checked} blobs: {status}")
    if not report.ok and not repair:
        sys.exit(2)


@cache.command()
@click.argument("file", type=click.Path(path_type=Path))
@cache_dir_option
def put(file: Path, cache_dir: Path | None) -> None:
    """Store FILE; prints its digest."""
    click.echo(str(open_store(cache_dir).blobs.put_file(file)))


@cache.command()
@click.argument("digest")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Where to write the blob.")
@cache_dir_option
def get(digest: str, output: Path, cache_dir: Path | None) -> None:
    """Write the blob DIGEST (as printed by put) to a file."""
    from trtcas.cas.digest import Digest

    method = open_store(cache_dir).blobs.materialize(Digest.parse(digest), output)
    click.echo(f"{output} ({method})", err=True)


@cache.command("config")
@click.argument("name", required=False)
@click.argument("value", required=False)
@cache_dir_option
def cache_config(name: str | None, value: str | None, cache_dir: Path | None) -> None:
    """Show or set the settings persisted in the cache: `cache config max-size 50G`,
    `cache config pin-max-age 30d`, `cache config max-size none`; no NAME lists them all."""
    from trtcas.cas.settings import SETTING_NAMES, setting_value, with_setting

    store = open_store(cache_dir)
    settings = store.settings
    if name is not None and value is not None:
        settings = with_setting(settings, name, value)
        store.save_settings(settings)
    for shown in (name,) if name is not None else SETTING_NAMES:
        current = setting_value(settings, shown)
        click.echo(f"{shown} = {'none' if current is None else _setting_text(shown, current)}")


def _setting_text(name: str, value) -> str:
    return format_size(value) if "size" in name else f"{value:g}s"


@cache.command("pins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@cache_dir_option
def cache_pins(as_json: bool, cache_dir: Path | None) -> None:
    """List pinned targets (the last build of each): age and the size of what they keep."""
    import time

    store = open_store(cache_dir)
    rows = []
    for pin in sorted(store.pins.all(), key=lambda p: p.pinned_at):
        size = sum(d.size for d in pin.blobs)
        rows.append({"target": pin.name, "id": pin.target, "age_s": round(time.time() - pin.pinned_at, 1),
                     "bytes": size, "actions": len(pin.action_keys)})
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        click.echo(f"{row['target']}  ({row['id']})  {_age_text(row['age_s'])} old  {format_size(row['bytes'])}  "
                   f"{row['actions']} actions")
    if not rows:
        click.echo("no pinned targets", err=True)


def _age_text(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


@cache.command("unpin")
@click.argument("target")
@cache_dir_option
def cache_unpin(target: str, cache_dir: Path | None) -> None:
    """Drop the pin of TARGET (a name or an id, as `cache pins` lists them), so gc may evict
    its last build; a name built from several target files unpins all of them."""
    store = open_store(cache_dir)
    pins = store.pins.matching(target)
    if not pins:
        raise TrtcasError(f"no pin for target {target!r}; `trtcas cache pins` lists the pinned targets")
    for pin in pins:
        store.pins.unpin(pin.target)
        click.echo(f"unpinned {pin.name} ({pin.target})", err=True)


# ---- build / status / graph / explain / log / env -----------------------------------------
def target_argument(func):
    return click.argument("target", required=False, default="trtcas.toml", type=click.Path(path_type=Path))(func)


def targets_argument(func):
    return click.argument("words", nargs=-1, metavar="[TARGET]... [ACTION]...")(func)


def set_option(func):
    return click.option(
        "--set", "overrides", multiple=True, metavar="KEY=VALUE",
        help="Override any target-file value, e.g. --set engine.optimization_level=5 (repeatable).",
    )(func)


def remote_options(func):
    func = click.option("--remote-upload/--no-remote-upload", default=True,
                        help="Upload results after successful actions (off for read-only consumers).")(func)
    return click.option("--remote", envvar="TRTCAS_REMOTE", default=None, metavar="URL",
                        help="Bazel-style HTTP cache, e.g. http://cache:8080 (default: $TRTCAS_REMOTE).")(func)


def split_target(target: Path, names: tuple[str, ...]) -> tuple[Path, tuple[str, ...]]:
    """``trtcas explain engine`` means an action named 'engine' of ./trtcas.toml, not a file."""
    from trtcas.config import find_targets

    targets, actions = find_targets((str(target), *names))
    if len(targets) > 1:
        raise TrtcasError(f"this command takes one target file, not {len(targets)}")
    return targets[0], actions


@cli.command()
@targets_argument
@click.option("-j", "--jobs", type=click.IntRange(1, 256), default=2, show_default=True, help="Actions run in parallel.")
@click.option("--dry-run", is_flag=True, help="Say what would run; run nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the BuildResult as JSON (a list for several targets; no progress).")
@click.option("--profile", type=click.Path(dir_okay=False, path_type=Path), help="Write a Chrome trace (open in Perfetto).")
@click.option("--scheduler", default=None, help="Where actions run: threads (this host) or ray (a build farm); default: [execution] scheduler, else threads.")
@click.option("--ray-address", default=None, metavar="ADDR", help="The Ray cluster to build on (implies --scheduler ray; default: [execution] address, $RAY_ADDRESS, a local cluster).")
@click.option("-k", "--keep-going", is_flag=True, help="With several targets, build the others after one fails.")
@click.option("-v", "--verbose", is_flag=True, help="Stream every action's log (TensorRT's builder log) while it runs.")
@click.option("-q", "--quiet", is_flag=True, help="Print only errors.")
@set_option
@remote_options
@cache_dir_option
def build(words, jobs, dry_run, as_json, profile, keep_going, verbose, quiet, scheduler, ray_address, overrides, remote,
          remote_upload, cache_dir):
    """Build TARGETs (trtcas.toml files, or directories of them; default ./trtcas.toml); with
    ACTION ids or rule names, only those and what they depend on. Ctrl-C cancels (exit 130)."""
    from trtcas.api import build as run_build
    from trtcas.config import find_targets
    from trtcas.graph.interrupt import cancel_on_sigint
    from trtcas.progress import ActionProgress
    from trtcas.summary import print_failures, print_summary

    targets, action_names = find_targets(words)
    if profile and len(targets) > 1:
        raise TrtcasError("--profile takes one target; build the targets one at a time to profile them")
    results, said, failed = [], set(), False
    # With --json, stdout carries the JSON alone: chatter of libraries (a build farm's
    # "node died" notices) goes to stderr.
    with contextlib.redirect_stdout(sys.stderr if as_json else sys.stdout), \
            ActionProgress(enabled=not as_json, quiet=quiet, verbose=verbose) as progress, \
            cancel_on_sigint(lambda text: click.echo(f"trtcas: {text}", err=True)):
        for target in targets:
            progress.begin(target.absolute().parent.name if target.name == "trtcas.toml" else str(target))
            try:
                result = run_build(
                    target, action_names, cache_dir=cache_dir, jobs=jobs, dry_run=dry_run, profile=profile,
                    overrides=overrides, remote=remote, remote_upload=remote_upload, reporter=progress,
                    scheduler=scheduler, scheduler_address=ray_address,
                )
            except TrtcasError as exc:
                if len(targets) == 1 or not keep_going:
                    raise
                click.echo(f"trtcas: error: {target}: {exc}", err=True)
                failed = True
                continue
            results.append(result)
            if not as_json:
                if not quiet:
                    print_summary(result, dry_run, said)
                print_failures(target, result)
            failed = failed or not result.ok
            if result.cancelled or (not result.ok and not keep_going):
                break
    if as_json:
        click.echo(results[0].to_json() if len(targets) == 1 else json.dumps([r.to_dict() for r in results], indent=2, sort_keys=True))
    if any(r.cancelled for r in results):
        click.echo("trtcas: cancelled", err=True)
        sys.exit(130)
    if failed:
        sys.exit(1)


@cli.command()
@targets_argument
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@set_option
@remote_options
@cache_dir_option
def status(words, as_json, overrides, remote, remote_upload, cache_dir):
    """Per action of each TARGET: up to date, or would run and why (one line each)."""
    from trtcas.api import build as run_build
    from trtcas.config import find_targets, load_config
    from trtcas.graph.explain import status_lines

    targets, action_names = find_targets(words)
    store = open_store(cache_dir)
    report = []
    for target in targets:
        config = load_config(target, overrides)
        result = run_build(target, action_names, cache_dir=cache_dir, dry_run=True, overrides=overrides,
                           remote=remote, remote_upload=False)
        report.append((config.name, status_lines(store, config.slug, result)))
    if as_json:
        echo_json([{"target": name, "actions": [s.to_dict() for s in lines]} for name, lines in report])
    else:
        for name, lines in report:
            if len(report) > 1:
                click.echo(f"{name}:")
            width = max((len(s.action_id) for s in lines), default=0)
            for s in lines:
                click.echo(f"{'  ' if len(report) > 1 else ''}{s.action_id:<{width}}  {s.text()}")
    failed = [s for _, lines in report for s in lines if s.status == "failed"]
    if failed:  # a build would fail: say so as it would, and exit non-zero (scripts check status)
        raise TrtcasError(f"{failed[0].action_id}: {failed[0].error}" if failed[0].error else
                          f"{failed[0].action_id} cannot run")


@cli.command()
@target_argument
@click.option("--format", "fmt", type=click.Choice(["text", "dot", "mermaid", "json"]), default="text", show_default=True)
@click.option("--status", is_flag=True, help="Annotate each action with what a build would do now (a dry run).")
@set_option
@remote_options
@cache_dir_option
def graph(target, fmt, status, overrides, remote, remote_upload, cache_dir):
    """Show the action graph of TARGET."""
    from trtcas.api import build as run_build
    from trtcas.api import plan_graph
    from trtcas.config import load_config
    from trtcas.graph.render import FORMATS

    config = load_config(target, overrides)
    notes = {}
    if status:
        result = run_build(target, cache_dir=cache_dir, dry_run=True, overrides=overrides, remote=remote, remote_upload=False)
        notes = {r.id: r.status for r in result.actions}
    click.echo(FORMATS[fmt](plan_graph(config), notes))


@cli.command()
@target_argument
@click.argument("action", required=False)
@click.option("--dry-run", is_flag=True, help="Explain what would re-run now, against the last build.")
@click.option("--all", "show_all", is_flag=True, help="Also list the actions that did not re-run.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: per action, entries of component/before/after/detail.")
@set_option
@remote_options
@cache_dir_option
def explain(target, action, dry_run, show_all, as_json, overrides, remote, remote_upload, cache_dir):
    """Why did actions of the last build re-run (or, with --dry-run, why would they now)?"""
    from trtcas.api import build as run_build
    from trtcas.config import load_config
    from trtcas.graph.explain import explain_builds
    from trtcas.graph.history import load_build
    from trtcas.graph.rule import RULES

    target, names = split_target(target, (action,) if action else ())
    action = names[0] if names else None
    config = load_config(target, overrides)
    store = open_store(cache_dir)
    last = load_build(store.root, config.slug, "last")
    if dry_run:
        result = run_build(target, cache_dir=cache_dir, dry_run=True, overrides=overrides, remote=remote, remote_upload=False)
        old, new = last, {r.id: r.to_dict(with_components=True) for r in result.actions}
    else:
        if last is None:
            raise TrtcasError(f"no build of {config.name} is recorded in {store.root}; run `trtcas build` first")
        old, new = load_build(store.root, config.slug, "previous"), last
    explanations = explain_builds(old, new, RULES, store.blobs, only=action)
    if action and not explanations:
        raise TrtcasError(f"no action or rule named {action!r} in the last build of {config.name}")
    if not (show_all or action):
        explanations = [e for e in explanations if e.ran]
    if as_json:
        echo_json([e.to_dict() for e in explanations])
        return
    if not explanations:
        click.echo(f"{config.name}: nothing re-ran (every action was a cache hit); --all lists them")
    for e in explanations:
        click.echo(f"{e.action_id}: {e.status}")
        for line in e.lines:
            click.echo(f"    {line}")


@cli.command(name="log")
@click.argument("words", nargs=-1, required=True, metavar="[TARGET] ACTION")
@cache_dir_option
def log_(words, cache_dir):
    """The log of ACTION's last run in the last build of TARGET (failed runs included):
    for an engine, TensorRT's builder log."""
    from trtcas.cas.digest import Digest
    from trtcas.config import find_targets, load_config
    from trtcas.graph.history import load_build

    targets, names = find_targets(words)
    if len(targets) != 1 or len(names) != 1:
        raise TrtcasError("give one action id (and optionally one target file), e.g. trtcas log 'engine[rank0]'")
    config = load_config(targets[0])
    store = open_store(cache_dir)
    last = load_build(store.root, config.slug, "last")
    if last is None:
        raise TrtcasError(f"no build of {config.name} is recorded in {store.root}; run `trtcas build` first")
    record = last.get(names[0]) or next((r for r in last.values() if r.get("rule") == names[0]), None)
    if record is None:
        raise TrtcasError(f"no action {names[0]!r} in the last build of {config.name}; actions: {', '.join(last)}")
    if not record.get("log"):
        raise TrtcasError(f"{record['id']} left no log in its last run ({record['status']}); "
                          "only actions that ran (or whose cached result was built with a log) have one")
    click.echo(store.blobs.get_bytes(Digest.parse(record["log"])).decode(errors="replace"))


@cli.command(name="run")
@target_argument
@click.option("--tokens", metavar="1,2,3", help="Token ids (LLM targets): prints the logits of the last position.")
@click.option("--input", "inputs", multiple=True, metavar="NAME=FILE.npy", help="An input array (repeatable).")
@click.option("--json", "as_json", is_flag=True, help='Print JSON: {"logits": [...], "argmax": N, "ranks": R}.')
@set_option
@cache_dir_option
def run_networks(target, tokens, inputs, as_json, overrides, cache_dir):
    """Evaluate the networks of every rank of TARGET in numpy (collectives simulated): what
    the engines compute, checked on any machine before deploying them."""
    import numpy as np

    from trtcas.api import run as run_target
    from trtcas.rules.evaluate.run import read_input_files

    try:
        ids = None if tokens is None else [int(t) for t in tokens.replace(" ", "").split(",") if t]
    except ValueError:
        raise TrtcasError(f"--tokens {tokens!r}: expected comma-separated integers like 1,2,3") from None
    target, _ = split_target(target, ())
    result = run_target(target, ids, read_input_files(inputs) if inputs else None, cache_dir=cache_dir,
                        overrides=overrides)
    if as_json:
        echo_json(result.to_dict())
        return
    if result.logits is not None:
        click.echo(f"ranks: {result.ranks}")
        click.echo(f"argmax: {result.argmax}")
        click.echo("logits: " + np.array2string(result.logits, precision=6, threshold=10**9, max_line_width=120))
        return
    for name, value in result.outputs.items():
        click.echo(f"{name} {value.dtype.name}{list(value.shape)}:")
        click.echo(np.array2string(value, precision=6, threshold=10**6, max_line_width=120))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def env(as_json):
    """The environment fingerprint: TensorRT flavour and version, CUDA, driver, GPU."""
    from trtcas.graph.fingerprint import collect_fingerprint

    fingerprint = collect_fingerprint()
    if as_json:
        echo_json(fingerprint.to_dict())
        return
    for name, field in sorted(fingerprint.fields.items()):
        value = field.value if field.reason is None else f"- ({field.reason})"
        click.echo(f"{name:>22}  {value}")


# ---- trtcas worker ... ------------------------------------------------------------------
@cli.group()
def worker() -> None:
    """Serve as a build-farm worker (Ray)."""


@worker.command("start")
@click.option("--address", required=True, metavar="ADDR", help="The Ray head to join, e.g. 10.0.0.1:6379.")
@click.option("--sm", "sms", multiple=True, metavar="SM", help="Offer only these SMs, e.g. --sm sm86 (repeatable).")
@click.option("--num-cpus", type=click.IntRange(1, 4096), default=None, help="Actions this host runs at once (default: its cores).")
@click.option("--block", is_flag=True, help="Stay in the foreground (ray start --block).")
@click.option("--dry-run", is_flag=True, help="Print the ray start command and resources; run nothing.")
@cache_dir_option
def worker_start(address, sms, num_cpus, block, dry_run, cache_dir):
    """Join the Ray cluster at ADDR offering what this host can build (its TensorRT
    flavours and versions, its GPU's SM and the AOT targets)."""
    from trtcas.worker import start_worker

    sys.exit(start_worker(address, sms, str(cache_dir) if cache_dir else None, num_cpus, block, dry_run))


def setup_logging() -> None:
    """Library warnings (a quarantined blob, a remote fault) as one ``trtcas: warning:`` line."""
    import logging

    class LowerLevel(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            return f"trtcas: {record.levelname.lower()}: {record.getMessage()}"

    handler = logging.StreamHandler()
    handler.setFormatter(LowerLevel())
    root = logging.getLogger("trtcas")
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if os.environ.get("TRTCAS_DEBUG") else logging.WARNING)
    root.propagate = False


def report_error(exc: BaseException) -> int:
    """Every error a user can cause, as one ``trtcas: error:`` line; returns the exit status.
    Anything not handled here is a bug and keeps its traceback."""
    if isinstance(exc, click.ClickException):
        exc.show()
        return exc.exit_code
    if isinstance(exc, (click.Abort, KeyboardInterrupt)):
        click.echo("trtcas: interrupted", err=True)
        return 130
    if isinstance(exc, TrtcasError):
        click.echo(f"trtcas: error: {exc}", err=True)
        return 1
    if isinstance(exc, (OSError, MemoryError)):  # a read-only or full disk, a path that is a file, too little memory
        from trtcas.oserrors import describe_resource_error

        click.echo(f"trtcas: error: {describe_resource_error(exc)}", err=True)
        return 1
    raise exc


def python_stderr_off_fd2() -> None:
    """Python's stderr on a duplicate of fd 2, so that what trtcas prints never mixes with
    the raw lines TensorRT's native code writes to fd 2 (routed into action logs, see
    rules.trt.native_stderr)."""
    try:
        sys.stderr.flush()
        duplicate = os.fdopen(os.dup(2), "w", buffering=1, encoding=sys.stderr.encoding, errors="backslashreplace")
    except (OSError, AttributeError, ValueError):
        return
    sys.stderr = duplicate


def main(argv: list[str] | None = None) -> None:
    python_stderr_off_fd2()
    setup_logging()
    try:
        code = cli.main(args=argv, prog_name="trtcas", standalone_mode=False)
    except (click.ClickException, click.Abort, KeyboardInterrupt, TrtcasError, OSError, MemoryError) as exc:
        code = report_error(exc)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
