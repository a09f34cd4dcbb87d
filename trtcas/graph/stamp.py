"""A build's stamp: what a successful build depended on, so the same build again is answered
without planning (Bazel's "nothing to do", in a few milliseconds instead of loading TensorRT).

Planning a target loads TensorRT (engine keys hold the builder config read back from it),
networkx, numpy and onnx: about half a second before the first key is known. But when nothing
a build depended on changed, its answer is already known: every action cached, every output
in place. The stamp records those dependencies and the answer:

- the *environment key*: the target's config (after overrides), the build options, the
  environment variables trtcas or CUDA read, the Python executable, the boot id (a reboot may
  change the GPU or driver), and the fingerprint overrides;
- *watched* files, by stat signature: every file and directory the planner read (found with an
  audit hook while it ran), the trtcas sources, the site-packages directories (any package
  install or removal moves their mtime, so TensorRT, numpy or a plugin package changing voids
  the stamp) and the plugin libraries;
- the *sources* of the actions, by digest (through the stat cache, as the runner takes them);
- the records of the build (keys, inputs, outputs) and the *outputs* placed, by signature
  (files the build wrote itself are trusted by signature, as the slow path trusts them).

A stamp is used only when every one of these still holds; anything else (a changed file, a
missing action entry, an output edited or removed, a file younger than the clock's
granularity when the stamp was written) falls back to a full build, which writes a new stamp.
The stamp only ever short-cuts to the answer a full build would give: "all cached".
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from trtcas.cas.atomic import atomic_write_bytes
from trtcas.cas.content_store import ContentStore
from trtcas.cas.digest import Digest
from trtcas.cas.tree import source_digest

STAMP_VERSION = 1
STAMP_FILE = "stamp.json"
# A file changed within the filesystem clock's granularity of the stamp may change again
# without its signature moving (the stat cache's rule): such a file is never trusted.
GRANULARITY_NS = 2_000_000_000
_ENV_PREFIXES = ("TRTCAS_", "CUDA_", "NVIDIA_", "LD_LIBRARY_PATH", "LD_PRELOAD", "PYTHONPATH")
_PACKAGE_ROOT = Path(__file__).resolve().parents[1]


# ---- signatures -------------------------------------------------------------------------
def signature(path: str | os.PathLike) -> list[int] | None:
    """(size, mtime_ns, ctime_ns, inode) of a file or directory, or None when it is absent."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _trusted(sig: list[int] | None, created_ns: int) -> bool:
    return sig is not None and max(sig[1], sig[2]) < created_ns - GRANULARITY_NS


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def environment_key(config_data: Mapping[str, Any], options: Mapping[str, Any]) -> str:
    """The digest of everything besides files a build's plan and keys depend on."""
    env = {k: v for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)}
    wire = {"v": STAMP_VERSION, "config": config_data, "options": options, "env": env,
            "python": [sys.executable, sys.version], "boot": _boot_id()}
    return hashlib.sha256(json.dumps(wire, sort_keys=True, default=str).encode()).hexdigest()


def _static_watch() -> list[str]:
    """Files whose change voids every stamp: trtcas's own code, installed packages, plugins."""
    code = [str(p) for p in sorted(_PACKAGE_ROOT.rglob("*.py"))]
    site = [p for p in sys.path if p and os.path.isdir(p) and not Path(p).resolve() == Path.cwd().resolve()]
    plugins = [p for p in os.environ.get("TRTCAS_PLUGIN_LIBS", "").split(":") if p]
    return code + site + plugins


# ---- watching what the planner reads ------------------------------------------------------
_WATCH = threading.local()
_HOOKED = False
_IGNORED = ("/proc/", "/sys/", "/dev/")


def _audit(event: str, args: tuple) -> None:
    paths = getattr(_WATCH, "paths", None)
    if paths is None:
        return
    if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        mode = args[1] if len(args) > 1 and isinstance(args[1], str) else "r"
        if "r" in mode or mode == "":
            paths.add(os.fsdecode(args[0]))
    elif event in ("os.listdir", "os.scandir", "glob.glob") and args and isinstance(args[0], (str, bytes, os.PathLike)):
        paths.add(os.fsdecode(args[0]) or ".")


@contextmanager
def watch_reads() -> Iterator[set[str]]:
    """The files and directories this thread opens or lists inside the block (absolute)."""
    global _HOOKED
    if not _HOOKED:
        sys.addaudithook(_audit)  # permanent by design; does nothing outside watch_reads
        _HOOKED = True
    seen: set[str] = set()
    _WATCH.paths = seen
    try:
        yield seen
    finally:
        _WATCH.paths = None
        absolute = {os.path.abspath(p) for p in seen if not p.startswith(_IGNORED)}
        seen.clear()
        seen.update(absolute)


# ---- the stamp ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Stamp:
    key: str
    created_ns: int
    watched: Mapping[str, list[int] | None]
    sources: Mapping[str, str]
    records: tuple[Mapping[str, Any], ...]
    outputs: Mapping[str, list[int] | None]
    placed: Mapping[str, str]

    def to_bytes(self) -> bytes:
        return json.dumps({"version": STAMP_VERSION, **self.__dict__}, default=list).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "Stamp":
        wire = json.loads(data)
        if wire.pop("version", None) != STAMP_VERSION:
            raise ValueError("stamp of another version")
        wire["records"] = tuple(wire["records"])
        return cls(**wire)


def stamp_path(store: ContentStore, slug: str, selection: Iterable[str] = ()) -> Path:
    """One stamp per target and selection of actions (``trtcas build TARGET engine[rank0]``)."""
    chosen = sorted(selection)
    if not chosen:
        return store.layout.history_dir(slug) / STAMP_FILE
    tag = hashlib.sha256("\0".join(chosen).encode()).hexdigest()[:16]
    return store.layout.history_dir(slug) / f"stamp-{tag}.json"


def write_stamp(store: ContentStore, slug: str, key: str, created_ns: int, planner_reads: Iterable[str],
                sources: Mapping[Path, Digest], records: Iterable[Mapping[str, Any]],
                placed: Mapping[str, str], output_files: Iterable[Path], selection: Iterable[str] = ()) -> None:
    """Record a successful build (best effort: a stamp that cannot be written costs speed only)."""
    cache_root = str(store.root) + os.sep
    watched_paths = [p for p in planner_reads if not p.startswith(cache_root)] + _static_watch()
    stamp = Stamp(
        key=key, created_ns=created_ns,
        watched={p: signature(p) for p in sorted(set(watched_paths))},
        sources={str(p): str(d) for p, d in sources.items()},
        records=tuple(records), outputs={str(p): signature(p) for p in output_files}, placed=dict(placed),
    )
    try:
        atomic_write_bytes(stamp_path(store, slug, selection), stamp.to_bytes())
    except OSError:
        pass


def forget_stamp(store: ContentStore, slug: str, selection: Iterable[str] = ()) -> None:
    try:
        stamp_path(store, slug, selection).unlink()
    except OSError:
        pass


def unchanged(store: ContentStore, slug: str, key: str, selection: Iterable[str] = ()) -> Stamp | None:
    """The stamp of the last build when nothing it depended on changed since, else None."""
    try:
        stamp = Stamp.from_bytes(stamp_path(store, slug, selection).read_bytes())
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if stamp.key != key:
        return None
    for path, sig in stamp.watched.items():
        if signature(path) != sig or (sig is not None and not _trusted(sig, stamp.created_ns)):
            return None
    for path, sig in stamp.outputs.items():  # written by the build itself, as the slow path trusts them
        if sig is None or signature(path) != sig:
            return None
    for path, digest in stamp.sources.items():
        try:
            if str(source_digest(Path(path), store.statcache, store.algo)) != digest:
                return None
        except Exception:  # a source gone or unreadable: the full build says what is wrong
            return None
    for record in stamp.records:
        if record.get("key") and signature(store.layout.action_entry(Digest.parse(record["key"]).hex)) is None:
            return None
    return stamp
