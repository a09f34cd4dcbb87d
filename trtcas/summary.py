"""What a finished build says on stderr: notes and warnings once per run, the verdict line,
and each failed action's error once, with the command that shows its log."""

from __future__ import annotations

from pathlib import Path

import click


def log_command(target: Path, action_id: str) -> str:
    """The command that prints ``action_id``'s log (said in error messages)."""
    import shlex

    where = [] if target == Path("trtcas.toml") else [shlex.quote(str(target))]
    return " ".join(["trtcas", "log", *where, shlex.quote(action_id)])


def print_summary(result, dry_run: bool, said: set[str]) -> None:
    """Notes and warnings (each once per run, however many targets) and the verdict line."""
    for prefix, lines in (("note", result.notes), ("warning", result.warnings)):
        for line in lines:
            if line not in said:
                said.add(line)
                click.echo(f"{prefix}: {line}", err=True)
    counts = ", ".join(f"{n} {status}" for status, n in sorted(result.counts().items()))
    verdict = "dry run" if dry_run else ("ok" if result.ok else ("CANCELLED" if result.cancelled else "FAILED"))
    click.echo(f"{result.target}: {verdict} in {result.seconds:.2f}s ({counts})", err=True)


def print_failures(target: Path, result) -> None:
    """Each failed action's error, once, with the command that shows its log; actions that
    failed alike (every rank's convert of one bad checkpoint) share one line naming them all."""
    alike: dict[str, list] = {}
    for record in result.actions:
        if record.status == "failed":
            alike.setdefault(record.problem, []).append(record)
    for error, records in alike.items():
        logged = next((r for r in records if r.log), None)
        hint = f" (its log: {log_command(target, logged.id)})" if logged else ""
        ids = ", ".join(r.id for r in records)
        click.echo(f"trtcas: error: {ids}: {error}{hint}", err=True)
    if not result.ok and not any(r.status == "failed" for r in result.actions) and not result.cancelled:
        click.echo(f"trtcas: error: {result.error}", err=True)
