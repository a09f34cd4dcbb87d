"""Placing a build's declared outputs in the output directory, by output format, as one transaction.

Most outputs are files: the blob's bytes (hardlinked or reflinked out of the store where it
can). A rule may declare another format for an output (``Rule.output_formats``), e.g. a
tensor manifest assembled into a ``.safetensors`` file; formats register by name in
``OUTPUT_FORMATS`` (entry point group ``trtcas.output_formats``). Each format also says
whether a destination already holds the output, so a no-op build rewrites nothing, and
remembers what it placed in the stat cache, so that answer costs a ``stat`` next time.

All outputs of a build appear together or not at all (``place_outputs``): the new tree is
staged beside the output dir (unchanged files hardlinked in, changed ones written), then
exchanged with the old one in one ``renameat2(RENAME_EXCHANGE)``. A failure anywhere before
the exchange (a missing blob, a full disk, a permission) leaves the previous outputs and
``build.json`` exactly as they were. When the output dir holds the target's own directory
(``dir = "."``), the tree is not exchanged wholesale: only the changed files are staged and
renamed into place, and put back from hardlinked backups if a rename fails.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import re
import shutil
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Protocol

from trtcas.cas.atomic import atomic_write_bytes, fsync_dir
from trtcas.cas.blobstore import BlobNotFound, BlobStore
from trtcas.cas.digest import Digest
from trtcas.cas.statcache import StatCache
from trtcas.errors import TrtcasError
from trtcas.graph.prepared import PreparedOutputs
from trtcas.oserrors import describe_os_error
from trtcas.registry import Registry

RENAME_EXCHANGE = 2  # linux/fs.h


class OutputFormat(Protocol):
    def up_to_date(self, blobs: BlobStore, statcache: StatCache, digest: Digest, dest: Path) -> bool: ...
    def place(self, blobs: BlobStore, digest: Digest, dest: Path) -> None: ...
    # optional: remember(statcache, digest, dest): record that dest now holds the output


class OutputError(TrtcasError):
    """The outputs could not be placed; the previous ones are untouched."""


class FileOutput:
    """The blob's bytes, as a read-only file."""

    def up_to_date(self, blobs: BlobStore, statcache: StatCache, digest: Digest, dest: Path) -> bool:
        try:
            return dest.is_file() and dest.stat().st_size == digest.size and statcache.digest_of(dest, blobs.algo) == digest
        except OSError:
            return False

    def place(self, blobs: BlobStore, digest: Digest, dest: Path) -> None:
        blobs.materialize(digest, dest)

    def remember(self, statcache: StatCache, digest: Digest, dest: Path) -> None:
        statcache.remember_written(dest, digest)


OUTPUT_FORMATS: Registry[OutputFormat] = Registry(
    "output format", entry_point_group="trtcas.output_formats", builtin={"file": FileOutput()}
)


@dataclass(frozen=True)
class PlannedOutput:
    """One output to place: where under the output dir, which blob, in which format."""

    relative: str
    digest: Digest
    format: str = "file"


def check_relative(relative: str, output_dir: Path) -> Path:
    """``output_dir / relative``, refusing names that would land outside the output dir."""
    path = Path(relative)
    if path.is_absolute() or not path.parts or ".." in path.parts:
        raise OutputError(f"output path {relative!r} is not a plain relative path inside {output_dir}; fix the rule or planner")
    return output_dir / path


def place_outputs(blobs: BlobStore, statcache: StatCache, output_dir: Path, planned: list[PlannedOutput],
                  files: Mapping[str, bytes], keep_inside: Path | None = None,
                  prepared: PreparedOutputs | None = None) -> dict[str, str]:
    """Place ``planned`` outputs and the small ``files`` (``build.json``) under ``output_dir``
    as one transaction; returns dest path -> digest text. ``keep_inside``: a directory that
    must never be moved (the target's own); an output dir holding it is updated per file.
    ``prepared``: files the build's rules already wrote in placed form, moved, not rewritten."""
    output_dir = Path(output_dir)
    formats = {p.format: OUTPUT_FORMATS.get(p.format) for p in planned}
    dests = {p: check_relative(p.relative, output_dir) for p in planned}
    for name in files:
        check_relative(name, output_dir)
    try:
        with _placing_lock(output_dir):
            _place_locked(blobs, statcache, output_dir, planned, formats, dests, files, keep_inside, prepared)
    except BlobNotFound:
        raise
    except OSError as exc:
        raise OutputError(f"cannot place outputs in {output_dir} ({_describe(exc, output_dir)}); the previous outputs "
                          "are unchanged; fix that path (free space, permissions, a file in the way) and build again") from exc
    return {str(dests[p]): str(p.digest) for p in planned}


def _describe(exc: OSError, output_dir: Path) -> str:
    """The error and the path it names, as the output dir (not the staging dir) has it."""
    where = re.sub(rf"/\.{re.escape(output_dir.name)}\.staging-[0-9]+-[0-9a-f]+(/new)?", f"/{output_dir.name}",
                   str(exc.filename or output_dir))
    return describe_os_error(OSError(exc.errno, exc.strerror, where)).split(";")[0]


@contextmanager
def _placing_lock(output_dir: Path) -> Iterator[None]:
    """One placer per output dir at a time (two builds of one target may finish together);
    the lock file lies beside the output dir, not in it."""
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(output_dir.parent / f".{output_dir.name}.lock", "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _place_locked(blobs: BlobStore, statcache: StatCache, output_dir: Path, planned: list[PlannedOutput],
                  formats: Mapping[str, OutputFormat], dests: Mapping[PlannedOutput, Path],
                  files: Mapping[str, bytes], keep_inside: Path | None, prepared: PreparedOutputs | None) -> None:
    unique = {p.relative: p for p in planned}  # ranks may share an output (one config.json)
    todo = [p for p in unique.values() if not formats[p.format].up_to_date(blobs, statcache, p.digest, dests[p])]
    if not todo:
        for name, data in files.items():
            atomic_write_bytes(output_dir / name, data)
    elif (keep_inside is not None and _holds(output_dir, Path(keep_inside))) or os.path.ismount(output_dir):
        # the target's own dir, or a mount point: neither can be swapped out, so per file
        _commit_files(_Placer(blobs, formats, prepared), output_dir, todo, files)
    else:
        _exchange_tree(_Placer(blobs, formats, prepared), output_dir, todo, files)
    for p in planned:  # linking and swapping moved ctimes: record what each dest holds now
        remember = getattr(formats[p.format], "remember", None)
        if remember is not None:
            remember(statcache, p.digest, dests[p])


def _holds(output_dir: Path, inner: Path) -> bool:
    out, inner = output_dir.resolve(), inner.resolve()
    return out == inner or out in inner.parents


def _staging_dir(output_dir: Path) -> Path:
    return output_dir.parent / f".{output_dir.name}.staging-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class _Placer:
    """Writes outputs into a staging tree: a prepared file is moved there (``graph.prepared``),
    anything else is written from the store by its format."""

    blobs: BlobStore
    formats: Mapping[str, OutputFormat]
    prepared: PreparedOutputs | None

    def write_into(self, root: Path, todo: list[PlannedOutput], files: Mapping[str, bytes]) -> None:
        for p in todo:
            dest = root / p.relative
            if self.prepared is None or not self.prepared.move_into_place(p.digest, dest):
                self.formats[p.format].place(self.blobs, p.digest, dest)
        for name, data in files.items():
            atomic_write_bytes(root / name, data)


def _exchange_tree(placer: _Placer, output_dir: Path, todo: list[PlannedOutput], files: Mapping[str, bytes]) -> None:
    """Stage the whole new tree beside the old one, then swap them in one rename."""
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = _staging_dir(output_dir)
    try:
        if output_dir.exists():
            _link_tree(output_dir, staging)
        else:
            staging.mkdir()
        placer.write_into(staging, todo, files)
        fsync_dir(staging)
        if not output_dir.exists():
            os.rename(staging, output_dir)
        elif _rename_exchange(staging, output_dir):
            pass  # staging now holds the old tree
        else:
            _swap_by_renames(staging, output_dir)
        fsync_dir(output_dir.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _link_tree(src: Path, dest: Path) -> None:
    """A copy of ``src`` whose files are hardlinks (cheap; placing replaces, never writes through)."""

    def link(s: str, d: str) -> None:
        try:
            os.link(s, d, follow_symlinks=False)
        except OSError:
            shutil.copy2(s, d, follow_symlinks=False)

    shutil.copytree(src, dest, symlinks=True, copy_function=link)


def _rename_exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2); False where the call or filesystem lacks it."""
    libc_name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError, TypeError):
        return False
    at_fdcwd = -100
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _swap_by_renames(staging: Path, output_dir: Path) -> None:
    """The fallback swap: old tree aside, new tree in; the old one is put back on failure."""
    aside = output_dir.parent / f".{output_dir.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    os.rename(output_dir, aside)
    try:
        os.rename(staging, output_dir)
    except OSError:
        os.rename(aside, output_dir)
        raise
    os.rename(aside, staging)  # removed with the staging dir


def _commit_files(placer: _Placer, output_dir: Path, todo: list[PlannedOutput], files: Mapping[str, bytes]) -> None:
    """Stage only the changed files, then rename each into place; a failed rename puts
    every file already replaced back from its hardlinked backup."""
    staging = _staging_dir(output_dir)
    names = [p.relative for p in todo] + list(files)
    try:
        staging.mkdir(parents=True)
        placer.write_into(staging / "new", todo, files)
        backups = staging / "old"
        for name in names:
            if (output_dir / name).exists():
                (backups / name).parent.mkdir(parents=True, exist_ok=True)
                os.link(output_dir / name, backups / name)
        done: list[str] = []
        try:
            for name in names:
                (output_dir / name).parent.mkdir(parents=True, exist_ok=True)
                os.replace(staging / "new" / name, output_dir / name)
                done.append(name)
        except OSError:
            for name in done:
                if (backups / name).exists():
                    os.replace(backups / name, output_dir / name)
                else:
                    (output_dir / name).unlink(missing_ok=True)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
