"""The last two builds of each target, with every action's key components, so
``trtcas explain`` can say what changed between them (or against a dry run now)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from trtcas.cas.atomic import atomic_write_bytes
from trtcas.cas.layout import CacheLayout
from trtcas.graph.result import ActionRecord


def _dir(cache_root: Path, slug: str) -> Path:
    return CacheLayout(Path(cache_root)).history_dir(slug)


def save_build(cache_root: Path, slug: str, records: list[ActionRecord]) -> None:
    """Keep this build as ``last`` and the one before as ``previous``."""
    folder = _dir(cache_root, slug)
    last = folder / "last.json"
    if last.exists():
        folder.mkdir(parents=True, exist_ok=True)
        os.replace(last, folder / "previous.json")
    wire = [r.to_dict(with_components=True) for r in records]  # a list: keeps build order
    atomic_write_bytes(last, json.dumps(wire, default=str).encode())


def load_build(cache_root: Path, slug: str, which: str = "last") -> dict[str, dict[str, Any]] | None:
    path = _dir(cache_root, slug) / f"{which}.json"
    try:
        return {record["id"]: record for record in json.loads(path.read_text())}
    except (FileNotFoundError, ValueError, TypeError, KeyError):
        return None
