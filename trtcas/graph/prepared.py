"""Outputs a rule wrote in their placed form while it ran, for this build to move into place.

A converted checkpoint would otherwise be written twice: its tensors into the store, then
(after every action) the whole file again into the output dir, decoded back out of the
store. A rule that holds the bytes anyway (the convert has each tensor in memory when it
stores it) can write the placed file at the same time, on a core that is otherwise
waiting, and placement then renames it into the output tree instead of writing it.

The files live for one build, in a directory under the cache's ``tmp/`` (the filesystem of
the rules' scratch dirs and of the store); Ctrl-C removes it with the scratch dirs, and
``cache verify --repair`` what a killed build left (after an hour).
Only a file whose action finished is offered, under its output's digest, and only the
local scheduler offers them: a farm worker's files would be on another host.
"""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from pathlib import Path

from trtcas.cas.digest import Digest
from trtcas.graph.interrupt import track_scratch, untrack_scratch


class PreparedOutputs:
    """One build's prepared output files, by the digest of the output they place."""

    def __init__(self, tmp_root: Path, output_dir: Path | None = None):
        self.root = Path(tmp_root) / f"prepared-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        # a file prepared on another filesystem could not be renamed into place: don't write it
        self.enabled = output_dir is None or _same_filesystem(Path(tmp_root), Path(output_dir))
        self._ready: dict[Digest, Path] = {}
        self._lock = threading.Lock()

    def new_path(self) -> Path:
        """A fresh path for a rule to write one output file at."""
        if not self.root.is_dir():
            self.root.mkdir(parents=True, exist_ok=True)
            track_scratch(self.root)
        return self.root / f"writing-{uuid.uuid4().hex}"

    def offer(self, written: Path, digest: Digest) -> None:
        """``written`` (a finished file from ``new_path``) places the output ``digest``."""
        with self._lock:
            if digest in self._ready:  # two actions made the same output: one file is enough
                written.unlink(missing_ok=True)
                return
            self._ready[digest] = written

    def move_into_place(self, digest: Digest, dest: Path) -> bool:
        """Rename the prepared file of ``digest`` to ``dest`` (read-only, durable); False
        when there is none or it cannot be renamed there (another filesystem): then the
        caller writes ``dest`` from the store as usual."""
        with self._lock:
            ready = self._ready.pop(digest, None)
        if ready is None:
            return False
        try:
            _make_durable(ready)
            os.chmod(ready, 0o444)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(ready, dest)
        except OSError:
            ready.unlink(missing_ok=True)
            return False
        return True

    def close(self) -> None:
        """Remove whatever was not placed (an output this build did not place after all)."""
        with self._lock:
            self._ready.clear()
        shutil.rmtree(self.root, ignore_errors=True)
        untrack_scratch(self.root)


def _same_filesystem(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` (or their nearest existing ancestors) are on one filesystem."""
    try:
        return _existing(a).stat().st_dev == _existing(b).stat().st_dev
    except OSError:
        return False


def _existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def _make_durable(path: Path) -> None:
    """fsync: nearly free when the action's own flush already wrote the pages out."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
