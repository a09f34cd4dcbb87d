"""Outputs a rule wrote in their placed form while it ran, for this build to move into place.

A converted checkpoint would otherwise be written twice: its tensors into the store, then
(after every action) the whole file again into the output dir, decoded back out of the
store. A rule that holds the bytes anyway (the convert has each tensor in memory when it
stores it) can write the placed file at the same time, on a core that is otherwise
waiting, and placement then renames it into the output tree instead of writing it.

The files live for one build, in a directory under the cache's ``tmp/`` (the filesystem of
the rules' scratch dirs and of the store) when the output dir is on that filesystem, else
beside the output dir (``.<dir>.prepared-<pid>-<id>``, where placement stages its tree too):
a cache on another disk, or on a shared mount, is the common case, and there the checkpoint
would otherwise be written twice over. Ctrl-C removes the directory with the scratch dirs;
what a killed build left is removed by ``cache verify --repair`` (under ``tmp/``) or by the
next build that prepares a file for the same output dir (beside it), once it is an hour old
and its process is gone.
Only a file whose action finished is offered, under its output's digest, and only the
local scheduler offers them: a farm worker's files would be on another host.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import threading
import time
import uuid
from pathlib import Path

from trtcas.cas.atomic import fsync_file
from trtcas.cas.digest import Digest
from trtcas.cas.leases import pid_alive
from trtcas.graph.interrupt import track_scratch, untrack_scratch


class PreparedOutputs:
    """One build's prepared output files, by the digest of the output they place."""

    def __init__(self, tmp_root: Path, output_dir: Path | None = None):
        name = f"prepared-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.root = Path(tmp_root) / name
        self._beside: Path | None = None  # the output dir, when the files are prepared beside it
        self.enabled = True
        if output_dir is not None and not _same_filesystem(Path(tmp_root), Path(output_dir)):
            output_dir = Path(output_dir).absolute()
            self._beside = output_dir
            self.root = output_dir.parent / f".{output_dir.name}.{name}"
            # a file must be renamed into place: an output dir that is a mount point of its
            # own (placed file by file, inside it) gets none
            self.enabled = _same_filesystem(output_dir.parent, output_dir)
        self._ready: dict[Digest, Path] = {}
        self._lock = threading.Lock()

    def new_path(self) -> Path:
        """A fresh path for a rule to write one output file at."""
        if not self.root.is_dir():
            if self._beside is not None:
                remove_abandoned(self._beside)
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
            fsync_file(ready)  # nearly free: the action's own flush wrote the pages out
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


ABANDONED_AFTER_S = 3600  # as ``cache verify --repair`` waits for a scratch dir


def remove_abandoned(output_dir: Path) -> None:
    """Remove the prepared dirs beside ``output_dir`` that a killed build left: an hour old
    and their process gone. A build that is still running (its pid alive on this host)
    keeps its own; should one on another host sharing this disk lose its files, it places
    them from the store instead (``move_into_place`` is then False)."""
    now = time.time()
    for path in Path(output_dir).parent.glob(f".{glob.escape(Path(output_dir).name)}.prepared-*"):
        match = re.fullmatch(rf"\.{re.escape(Path(output_dir).name)}\.prepared-(\d+)-[0-9a-f]+", path.name)
        try:
            if match is None or now - path.stat().st_mtime < ABANDONED_AFTER_S or pid_alive(int(match.group(1))):
                continue
        except OSError:
            continue
        shutil.rmtree(path, ignore_errors=True)


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
