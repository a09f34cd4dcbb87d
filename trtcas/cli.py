"""The ``trtcas`` command.

Every user-caused failure arrives here as a ``TrtcasError`` and leaves as one line on
stderr and exit status 1; ``--cache-dir`` is accepted by every command, before or after
its own arguments.
"""

from __future__ import annotations

import json
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
        type=click.Path(file_okay=False, path_type=Path),
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
        ("blobs", f"{result.blobs} ({result.raw_blobs} raw, {result.zstd_blobs} zstd)"),
        ("on disk", format_size(result.disk_bytes)),
        ("logical", format_size(result.logical_bytes)),
        ("zstd saved", format_size(result.compression_saved_bytes)),
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
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@cache_dir_option
def gc(max_size: str, dry_run: bool, as_json: bool, cache_dir: Path | None) -> None:
    """Evict LRU action entries and blobs down to a size cap; pinned builds are kept."""
    from trtcas.cas.gc import execute_gc, parse_size, plan_gc

    store = open_store(cache_dir)
    plan = plan_gc(store, parse_size(max_size))
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


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="trtcas")
    except TrtcasError as exc:
        click.echo(f"trtcas: error: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
