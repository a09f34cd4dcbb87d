"""Pins: what the last build of each target used, so gc never evicts it.

One small JSON file per target under ``<cache>/pins/``, replaced atomically after each
successful build. GC keeps every action entry and blob named by any pin file.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from trtcas.cas.atomic import atomic_write_bytes
from trtcas.cas.digest import Digest

log = logging.getLogger(__name__)
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class Pin:
    """The action keys and blobs one target's last build used."""

    target: str
    action_keys: frozenset[str]
    blobs: frozenset[Digest]


class Pins:
    def __init__(self, pins_root: str | os.PathLike):
        self.root = Path(pins_root)

    def _path(self, target: str) -> Path:
        return self.root / (_SAFE.sub("_", target).strip("_") or "target")

    def pin(self, target: str, action_keys: Iterable[str], blobs: Iterable[Digest]) -> None:
        wire = {"target": target, "action_keys": sorted(set(action_keys)), "blobs": sorted({str(b) for b in blobs})}
        atomic_write_bytes(self._path(target).with_suffix(".json"), json.dumps(wire, indent=1).encode())

    def all(self) -> list[Pin]:
        pins = []
        if not self.root.is_dir():
            return pins
        for path in sorted(self.root.glob("*.json")):
            try:
                wire = json.loads(path.read_text())
                pins.append(Pin(wire["target"], frozenset(wire["action_keys"]), frozenset(Digest.parse(b) for b in wire["blobs"])))
            except Exception as exc:  # a broken pin file pins nothing, and says so
                log.warning("ignoring unreadable pin file %s (%s)", path, exc)
        return pins
