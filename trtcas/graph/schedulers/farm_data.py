"""How bytes move between the driver and build-farm workers: through the shared cache.

Inputs travel by digest. Before an action is sent, the driver makes sure the shared remote
has every blob the action may read (its inputs, the tensors a weights manifest names, and
its source files), so workers pull from the remote cache, never from the driver; a worker
that sees a source at the driver's path with the same content (a shared filesystem) reads
it there. A worker reads through its own local cache: a blob it lacks
is fetched from the remote, verified, and kept for the next action. What the action
produced is uploaded to the remote, and the driver pulls it into its own cache.

Without a remote (or when the remote refuses a blob), the same blobs travel through Ray's
object store instead: the driver ships what the worker may need, the worker returns what it
produced. Either way every blob is verified against its digest before it is stored, so a
worker that dies half-way leaves nothing corrupt anywhere.
"""

from __future__ import annotations

import io
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Mapping

from trtcas.cas.blobstore import BlobNotFound, BlobStore
from trtcas.cas.content_store import ContentStore
from trtcas.cas.digest import Digest
from trtcas.cas.manifest import TensorManifest
from trtcas.cas.tree import source_digest, tree_listing
from trtcas.errors import TrtcasError

_MANIFEST_HEAD = b'{"tensors":'
_MANIFEST_MAX = 64 << 20  # a manifest is small JSON; larger blobs are not opened to look


def blob_closure(blobs: BlobStore, digests: Iterable[Digest]) -> list[Digest]:
    """The blobs of ``digests`` this store has, plus those they name: a weights manifest
    (``cas.manifest``) names one blob per tensor, which a rule reading the manifest may read
    too. Blobs not here are left out: a worker fetches them from the remote if a rule
    really reads one (a remote hit brings a manifest, not every tensor it names)."""
    out: dict[Digest, None] = {}
    for digest in digests:
        if not blobs.has(digest):
            continue
        out[digest] = None
        if digest.size > _MANIFEST_MAX:
            continue
        with blobs.open(digest) as stream:
            if stream.read(len(_MANIFEST_HEAD)) != _MANIFEST_HEAD:
                continue
        try:
            manifest = TensorManifest.from_bytes(blobs.get_bytes(digest))
        except (ValueError, KeyError, TypeError):
            continue
        out.update((entry.digest, None) for entry in manifest.entries if blobs.has(entry.digest))
    return list(out)


@dataclass(frozen=True)
class StagedSource:
    """A source input as a worker finds it: at ``path`` if it sees the same file there
    (a shared filesystem), else by digest; a directory by its listing's blobs."""

    path: str
    digest: Digest
    files: tuple[tuple[str, Digest], ...] = ()  # a directory's (relative path, digest)
    is_dir: bool = False


@dataclass(frozen=True)
class Shipment:
    """What the driver staged for one action: sources, and blobs sent through Ray's object
    store (digest text -> ObjectRef) where the remote could not take them."""

    sources: Mapping[str, StagedSource]
    shipped: Mapping[str, Any] = field(default_factory=dict)


class DriverStaging:
    """Puts an action's inputs where a worker can read them; thread-safe, once per blob."""

    def __init__(self, store: ContentStore, remote: Any | None, put_object: Callable[[bytes], Any]):
        self.store = store
        self.remote = remote
        self._put_object = put_object
        self._uploaded: set[Digest] = set()
        self._objects: dict[Digest, Any] = {}
        self._lock = threading.Lock()

    def stage(self, inputs: Mapping[str, Digest], sources: Mapping[str, str]) -> Shipment:
        staged = {name: self._source(Path(path), inputs[name]) for name, path in sources.items()}
        opened: dict[Digest, Callable[[], BinaryIO]] = {}
        for digest in blob_closure(self.store.blobs, (d for n, d in inputs.items() if n not in sources)):
            opened[digest] = lambda d=digest: self.store.blobs.open(d)
        for source in staged.values():
            base = Path(source.path)
            if source.is_dir:
                listing = tree_listing(base, self.store.statcache, self.store.algo)
                opened[source.digest] = lambda data=listing: io.BytesIO(data)
                for relative, digest in source.files:
                    opened[digest] = lambda p=base / relative: open(p, "rb")
            else:
                opened[source.digest] = lambda p=base: open(p, "rb")
        shipped = {str(d): ref for d, ref in self._deliver(opened).items()}
        return Shipment(staged, shipped)

    def _source(self, path: Path, digest: Digest) -> StagedSource:
        if not path.is_dir():
            return StagedSource(str(path), digest)
        listing = json.loads(tree_listing(path, self.store.statcache, self.store.algo))
        return StagedSource(str(path), digest, tuple((rel, Digest.parse(d)) for rel, d in listing), is_dir=True)

    def _deliver(self, opened: Mapping[Digest, Callable[[], BinaryIO]]) -> dict[Digest, Any]:
        """Upload to the remote what it lacks; what it cannot take goes by object store."""
        refs = {}
        for digest, open_stream in opened.items():
            if self._to_remote(digest, open_stream):
                continue
            with self._lock:
                ref = self._objects.get(digest)
            if ref is None:
                with open_stream() as stream:
                    ref = self._put_object(stream.read())
                with self._lock:
                    self._objects[digest] = ref
            refs[digest] = ref
        return refs

    def _to_remote(self, digest: Digest, open_stream: Callable[[], BinaryIO]) -> bool:
        if self.remote is None or self.remote.disabled:
            return False
        with self._lock:
            if digest in self._uploaded:
                return True
        try:
            if not self.remote.head_blob(digest):
                self.remote.put_blob(digest, open_stream)
        except Exception:  # a remote fault: ship it through Ray instead
            return False
        with self._lock:
            self._uploaded.add(digest)
        return True

    def receive(self, produced: Iterable[Digest], returned: Mapping[str, bytes]) -> None:
        """Store what a worker produced: returned bytes, else pulled from the remote;
        verified either way."""
        for digest in produced:
            if self.store.blobs.has(digest):
                continue
            data = returned.get(str(digest))
            if data is not None:
                self.store.blobs.put_verified_stream(io.BytesIO(data), digest)
                continue
            try:
                fetched = self.remote is not None and self.remote.get_blob(
                    digest, lambda body, d=digest: self.store.blobs.put_verified_stream(body, d)) is not None
            except Exception as exc:  # a remote fault or wrong bytes: nothing was stored
                raise TrtcasError(f"cannot fetch the worker's output {digest} from the remote cache "
                                  f"({type(exc).__name__}: {exc}); nothing was recorded, build again") from None
            if not fetched:
                raise TrtcasError(f"the worker's output {digest} is neither in the remote cache nor returned")


class FetchingBlobs:
    """A worker's ``BlobStore``, reading through to the remote and the driver's shipment, and
    noting every blob the action puts (to upload or return them)."""

    def __init__(self, local: BlobStore, fetchers: list[Callable[[Digest], bool]]):
        self._local = local
        self._fetchers = fetchers
        self.produced: dict[Digest, None] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._local, name)

    def ensure(self, digest: Digest) -> None:
        if self._local.has(digest):
            return
        for fetch in self._fetchers:
            if fetch(digest):
                return
        raise BlobNotFound(f"blob {digest} is in neither this worker's cache, the remote cache, nor what the driver sent")

    def has(self, digest: Digest) -> bool:
        try:
            self.ensure(digest)
        except BlobNotFound:
            return False
        return True

    def open(self, digest: Digest) -> BinaryIO:
        self.ensure(digest)
        return self._local.open(digest)

    def get_bytes(self, digest: Digest) -> bytes:
        self.ensure(digest)
        return self._local.get_bytes(digest)

    def materialize(self, digest: Digest, dest: str | os.PathLike, mode: str = "auto") -> str:
        self.ensure(digest)
        return self._local.materialize(digest, dest, mode)

    def content_view(self, digest: Digest) -> memoryview:
        self.ensure(digest)
        return self._local.content_view(digest)

    def _note(self, digest: Digest) -> Digest:
        self.produced[digest] = None
        return digest

    def put_bytes(self, data: bytes) -> Digest:
        return self._note(self._local.put_bytes(data))

    def put_stream(self, stream: BinaryIO) -> Digest:
        return self._note(self._local.put_stream(stream))

    def put_file(self, path: str | os.PathLike, consume: bool = False) -> Digest:
        return self._note(self._local.put_file(path, consume))

    def put_tensor(self, data: bytes | memoryview, dtype: str | None = None, parent: Digest | None = None) -> Digest:
        return self._note(self._local.put_tensor(data, dtype, parent))

    def put_tensors(self, items: Any) -> Iterator[Digest]:
        for digest in self._local.put_tensors(items):
            yield self._note(digest)


class WorkerStore:
    """What ``graph.context.run_invocation`` needs of a store, on a worker: its local cache
    with blobs read through (``FetchingBlobs``)."""

    def __init__(self, local: ContentStore, fetchers: list[Callable[[Digest], bool]]):
        self.local = local
        self.root, self.layout, self.algo, self.statcache = local.root, local.layout, local.algo, local.statcache
        self.blobs = FetchingBlobs(local.blobs, fetchers)


def remote_fetcher(remote: Any, blobs: BlobStore) -> Callable[[Digest], bool]:
    def fetch(digest: Digest) -> bool:
        if remote.disabled or not remote.trusts(digest):
            return False
        try:
            return remote.get_blob(digest, lambda body: blobs.put_verified_stream(body, digest)) is not None
        except Exception:  # a remote fault (or wrong bytes, never stored): try the next source
            return False
    return fetch


def shipped_fetcher(shipped: Mapping[str, Any], blobs: BlobStore, get_object: Callable[[Any], bytes]) -> Callable[[Digest], bool]:
    def fetch(digest: Digest) -> bool:
        ref = shipped.get(str(digest))
        if ref is None:
            return False
        blobs.put_verified_stream(io.BytesIO(get_object(ref)), digest)
        return True
    return fetch


def place_sources(store: WorkerStore, sources: Mapping[str, StagedSource], root: Path) -> dict[str, Path]:
    """Each source as a path on this worker: the driver's own paths when this worker holds
    the same content at every one of them, else all rebuilt under ``root`` (same absolute
    layout). All or none: an ONNX file must find its external data beside it, so one source
    seen in place and another rebuilt elsewhere would part them."""
    def here(source: StagedSource) -> bool:
        path = Path(source.path)
        try:
            return path.exists() and source_digest(path, store.statcache, store.algo) == source.digest
        except TrtcasError:
            return False

    if all(here(source) for source in sources.values()):
        return {name: Path(source.path) for name, source in sources.items()}
    placed = {}
    for name, source in sources.items():
        path = Path(source.path)
        target = root / path.relative_to(path.anchor)
        if source.is_dir:
            for relative, digest in source.files:
                store.blobs.materialize(digest, target / relative)
        else:
            store.blobs.materialize(source.digest, target)
        placed[name] = target
    return placed
