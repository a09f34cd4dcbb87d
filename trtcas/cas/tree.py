"""Digests of source inputs: a file is its content; a directory is the canonical list of
its files' relative paths and digests (as REAPI's ``Tree``), so renaming or moving the
directory itself never changes a key but renaming a file inside it does."""

from __future__ import annotations

import json
import os
from pathlib import Path

from trtcas.cas.digest import Digest, hash_bytes
from trtcas.errors import TrtcasError


def tree_listing(root: Path, statcache, algo: str) -> bytes:
    """Canonical JSON of [[relative posix path, digest text], ...], sorted, hidden files skipped."""
    entries = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            entries.append([path.relative_to(root).as_posix(), str(statcache.digest_of(path, algo))])
    return json.dumps(sorted(entries), separators=(",", ":")).encode()


def source_digest(path: Path, statcache, algo: str) -> Digest:
    """Digest of a source file or directory, with a clear error when it is not there."""
    try:
        if path.is_dir():
            return hash_bytes(tree_listing(path, statcache, algo), algo)
        return statcache.digest_of(path, algo)
    except FileNotFoundError:
        raise TrtcasError(f"input {path} does not exist; fix the path in the target file") from None
    except PermissionError:
        raise TrtcasError(f"input {path} is not readable (permission denied)") from None
