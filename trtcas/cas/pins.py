"""Pins: what the last build of each target used, so gc never evicts it.

One small JSON file per target under ``<cache>/pins/``, replaced atomically after each
successful build. GC keeps every action entry and blob named by any pin file.

A pin file is named by ``pin_file_name``: a readable slug of the target plus a hash of the exact
target string, so ``llama-3.1-8b`` and ``llama-3.2-1b`` (which ``with_suffix`` once folded into
one ``llama-3.json``) or ``a/b`` and ``a_b`` get files of their own. The name goes one way only;
the exact target is the ``target`` field inside the file, which is what ``all()`` reads.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from trtcas.cas.atomic import atomic_write_bytes
from trtcas.cas.digest import Digest

log = logging.getLogger(__name__)
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_SLUG_CHARS = 80  # keeps names far below 255 bytes, whatever the target's length
_HASH_CHARS = 16  # 64 bits of sha256: a collision between two targets of one cache is not a worry


def pin_file_name(target: str) -> str:
    """``<slug>-<sha256 of target, 16 hex>.json``: ASCII, no separators, never hidden nor ``..``.

    The slug is only for people listing the folder; the hash tells targets apart, also on
    case-insensitive file systems (it is lower-case hex of the exact, case-sensitive name).
    """
    slug = _SAFE.sub("_", target).strip("._-")[:_SLUG_CHARS].rstrip(".") or "target"
    digest = hashlib.sha256(target.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_CHARS]
    return f"{slug}-{digest}.json"


def _legacy_file_name(target: str) -> str:
    """The name before ``pin_file_name``: two targets could share it (see the module docstring)."""
    return str(Path(_SAFE.sub("_", target).strip("_") or "target").with_suffix(".json"))


@dataclass(frozen=True)
class Pin:
    """The action keys and blobs one target's last build used."""

    target: str
    action_keys: frozenset[str]
    blobs: frozenset[Digest]
    pinned_at: float = 0.0  # when the build that wrote it ended (pins older than pin-max-age expire)
    name: str = ""  # the target's own name, for people (``target`` is the unique id)


class Pins:
    def __init__(self, pins_root: str | os.PathLike):
        self.root = Path(pins_root)

    def _path(self, target: str) -> Path:
        return self.root / pin_file_name(target)

    def pin(self, target: str, action_keys: Iterable[str], blobs: Iterable[Digest], name: str = "") -> None:
        wire = {"target": target, "action_keys": sorted(set(action_keys)), "blobs": sorted({str(b) for b in blobs}),
                "pinned_at": time.time(), "name": name or target}
        atomic_write_bytes(self._path(target), json.dumps(wire, indent=1).encode())
        self._drop_legacy(target)

    def _drop_legacy(self, target: str) -> None:
        """Remove this target's pin file of the old naming, once the new one is written.

        Old files are still read by ``all()`` (it reads the target from inside), so a cache of
        the old layout keeps its pins; this only stops a stale one from pinning forever. A
        legacy file that holds another target (the old collisions) is left alone.
        """
        try:
            legacy = self.root / _legacy_file_name(target)
            if legacy.is_file() and json.loads(legacy.read_text()).get("target") == target:
                legacy.unlink()
        except (OSError, ValueError, AttributeError):  # no such name possible, or unreadable:
            pass  # all() already ignores an unreadable file, with a warning

    def matching(self, name: str) -> list[Pin]:
        """The pins a user means by ``name``: the one whose id is ``name``, else every pin of a
        target called ``name`` (one target name may be built from several target files)."""
        pins = self.all()
        exact = [p for p in pins if p.target == name]
        return exact or [p for p in pins if p.name == name]

    def unpin(self, target: str) -> bool:
        """Drop the pin of ``target`` (its current and legacy file); True if there was one."""
        found = False
        for path in (self._path(target), self.root / _legacy_file_name(target)):
            try:
                if json.loads(path.read_text()).get("target") == target:
                    path.unlink()
                    found = True
            except (OSError, ValueError, AttributeError):
                continue
        return found

    def all(self) -> list[Pin]:
        pins = []
        if not self.root.is_dir():
            return pins
        for path in sorted(self.root.glob("*.json")):
            try:
                wire = json.loads(path.read_text())
                pinned_at = float(wire.get("pinned_at") or path.stat().st_mtime)
                pins.append(Pin(wire["target"], frozenset(wire["action_keys"]),
                                frozenset(Digest.parse(b) for b in wire["blobs"]), pinned_at,
                                str(wire.get("name") or wire["target"])))
            except Exception as exc:  # a broken pin file pins nothing, and says so
                log.warning("ignoring unreadable pin file %s (%s)", path, exc)
        return pins
