"""The local content-addressed store: bytes by digest, on disk, never half-written.

Layout: ``<root>/cas/<algo>/<hh>/<hex>`` holds the exact bytes of a blob stored raw (so it
can be hardlinked, reflinked or mmapped); ``<hex>.zst`` holds a blob that zstd shrank by
at least ``min_saving``; ``<hex>.tcx`` holds a tensor as a codec frame (``cas.codecs``: byte
planes, or an XOR delta against a parent tensor, for weights, which plain zstd barely
shrinks). A delta names its parent in its header; reading it reads the parent first
(verified, chains at most ``max_chain_depth`` deep), and the decoded content is verified
against the blob's own digest, whatever the encoding.

Every write is a temp file on the same filesystem, fsync, chmod read-only, ``os.replace``:
a crash never leaves a visible partial blob, and two processes storing the same content
both succeed (each rename installs identical bytes). Every read first checks the blob
against its digest -- cheaply, through the stat cache, when the file is untouched since it
was last hashed -- and a blob that fails is moved to ``quarantine/`` and reported as a miss.
"""

from __future__ import annotations

import errno
import io
import logging
import mmap
import os
import shutil
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable, Iterable, Iterator, Sequence

import zstandard

from trtcas.cas.atomic import DIRECT_MIN_BYTES, AtomicFile, atomic_writer, fsync_dir, sync_filesystem
from trtcas.cas.blobfiles import content_size, hash_zstd_file, try_reflink, zstd_size_or_none
from trtcas.cas.digest import CHUNK, DEFAULT_ALGO, Digest, check_algo, hash_bytes
from trtcas.cas.hashing_writer import HashingWriter
from trtcas.cas.layout import CacheLayout
from trtcas.cas.ordered_pool import ordered_results
from trtcas.cas.statcache import NullStatCache, StatCache
from trtcas.cas.stored_blob import BlobNotFound, ContentChanged, CorruptBlob, DigestMismatch, StoredBlob
from trtcas.errors import TrtcasError

if TYPE_CHECKING:  # numpy is imported only when a tensor is stored
    from trtcas.cas.codecs.planes import PlaneRing

log = logging.getLogger(__name__)

ZSTD_SUFFIX = ".zst"
TCX_SUFFIX = ".tcx"
_SUFFIXES = ("", ZSTD_SUFFIX, TCX_SUFFIX)  # the order locate prefers them in
MAX_CHAIN_DEPTH = 4
SAMPLE_BYTES = 4 << 20  # compressibility is judged on the first 4 MiB


class BlobStore:
    """Local CAS rooted at a cache directory."""

    def __init__(
        self,
        root: str | os.PathLike,
        algo: str = DEFAULT_ALGO,
        statcache: StatCache | NullStatCache | None = None,
        zstd_level: int = 3,
        min_saving: float = 0.10,
        max_chain_depth: int = MAX_CHAIN_DEPTH,
    ):
        self.root = Path(root)
        self.algo = check_algo(algo)
        self.layout = CacheLayout(self.root)
        self.statcache = statcache if statcache is not None else StatCache(self.layout.statcache_db)
        self.zstd_level = zstd_level
        self.min_saving = min_saving
        self.max_chain_depth = max_chain_depth
        self._batches = threading.local()
        self.blob_root = self.layout.blob_root(self.algo)
        self.tmp_root = self.layout.tmp_root
        self.quarantine_root = self.layout.quarantine_root
        # Called with each digest a put found already stored (writing nothing): a running
        # build's lease records it, so gc keeps the blob (cas.leases).
        self.reuse_listener: Callable[[Digest], None] | None = None

    # ---- locating ---------------------------------------------------------------------
    def _raw_path(self, digest: Digest) -> Path:
        if digest.algo != self.algo:
            raise BlobNotFound(f"{digest} is a {digest.algo} digest but this store uses {self.algo}")
        return self.layout.blob(self.algo, digest.hex)

    def locate(self, digest: Digest) -> StoredBlob | None:
        """Where ``digest`` is stored, raw preferred, or None. Does not verify content.

        A stored size other than the digest's is a miss, never a quarantine: the digest asked
        for may be the wrong one (``cache get <hex>/<wrong size>``), and a truly corrupt blob
        is caught by hashing (``verify``) or replaced by the next put. A blob path that is not
        a regular file (a symlink, a directory) is never served: it is quarantined.
        """
        raw = self._raw_path(digest)
        for suffix in _SUFFIXES:
            path = raw.with_name(raw.name + suffix)
            try:
                st = path.lstat()
            except (FileNotFoundError, NotADirectoryError):
                continue
            if not stat.S_ISREG(st.st_mode):
                self.quarantine(digest, path, "not a regular file (a symlink or a directory)")
                continue
            if suffix == "" and st.st_size != digest.size:
                continue
            if suffix == ZSTD_SUFFIX and zstd_size_or_none(path) != digest.size:
                continue
            return StoredBlob(digest, path, suffix == ZSTD_SUFFIX, st.st_size, st.st_mtime, suffix == TCX_SUFFIX)
        return None

    def has(self, digest: Digest) -> bool:
        """Whether ``digest`` is stored and, for a delta, its parents too (a delta whose
        parent is gone cannot be read, so it does not count: storing it again replaces it)."""
        blob = self.locate(digest)
        for _ in range(self.max_chain_depth + 1):
            parent = self.parent_of(blob) if blob is not None else None
            if parent is None:
                return blob is not None
            blob = self.locate(parent[0])
        return False

    def parent_of(self, blob: StoredBlob) -> tuple[Digest, int] | None:
        """(parent digest, parent's chain depth) of a delta blob, from its header; else None.
        An unreadable header counts as no parent here: reading the blob will quarantine it."""
        if not blob.frame:
            return None
        from trtcas.cas import frameblobs

        try:
            return frameblobs.parent_of(frameblobs.read_header(blob.path))
        except (OSError, frameblobs.CodecError):
            return None

    def iter_blobs(self) -> Iterator[StoredBlob]:
        """Every blob file in the store (including ones that may be corrupt)."""
        if not self.blob_root.is_dir():
            return
        for shard in sorted(self.blob_root.iterdir()):
            if not shard.is_dir():
                continue
            for entry in os.scandir(shard):
                if entry.name.startswith("."):
                    continue
                compressed = entry.name.endswith(ZSTD_SUFFIX)
                frame = entry.name.endswith(TCX_SUFFIX)
                hexd = entry.name[:-4] if compressed or frame else entry.name
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                try:
                    size = st.st_size if not entry.is_file(follow_symlinks=False) \
                        else content_size(Path(entry.path), compressed, frame, st.st_size)
                except (OSError, ValueError, TrtcasError, zstandard.ZstdError):
                    size = st.st_size  # an unreadable header: listed as it lies, so verify reports it
                yield StoredBlob(Digest(self.algo, hexd, size), Path(entry.path), compressed, st.st_size, st.st_mtime, frame)

    def iter_temp_files(self) -> Iterator[Path]:
        """Leftover temp files of interrupted writers (never visible as blobs)."""
        for base in (self.blob_root, self.tmp_root):
            if base.is_dir():
                yield from (p for p in base.rglob(".*.tmp"))

    # ---- writing ----------------------------------------------------------------------
    def _should_compress(self, sample: bytes) -> bool:
        if len(sample) < 64:
            return False
        compressed = zstandard.ZstdCompressor(level=self.zstd_level).compress(sample)
        return len(compressed) <= (1.0 - self.min_saving) * len(sample)

    def _final_path(self, digest: Digest, compressed: bool) -> Path:
        raw = self._raw_path(digest)
        return raw.with_name(raw.name + ZSTD_SUFFIX) if compressed else raw

    def _write_into(self, pending: AtomicFile, first: bytes, rest: Iterator[bytes], size: int) -> tuple[Digest, bool]:
        """Write a blob whose first chunk is ``first`` into the temp file of ``pending``."""
        compress = self._should_compress(first[:SAMPLE_BYTES])
        writer = HashingWriter(pending.open(), self.algo, compress, self.zstd_level, size)
        writer.write(first)
        for chunk in rest:
            writer.write(chunk)
        return writer.finish(), compress

    def _reused(self, digest: Digest) -> None:
        listener = self.reuse_listener
        if listener is not None:
            listener(digest)

    def _store_chunks(
        self, first: bytes, rest: Iterator[bytes], expected: Digest | None, untrusted: bool = False
    ) -> Digest:
        """Write, check against ``expected`` (if known), install. A mismatch is
        ``ContentChanged`` for our own files and ``DigestMismatch`` for untrusted bytes."""
        directory = self._raw_path(expected).parent if expected else self.tmp_root
        stem, size = (expected.hex, expected.size) if expected else ("stream", -1)
        with atomic_writer(directory / stem, mode=0o444) as pending:
            try:
                digest, compressed = self._write_into(pending, first, rest, size)
            except zstandard.ZstdError as exc:  # the zstd frame was declared with expected.size
                raise _mismatch(expected, None, untrusted) from exc
            if expected is not None and digest != expected:
                raise _mismatch(expected, digest, untrusted)
            if self.has(digest):
                pending.discard()
                self._reused(digest)
            else:
                pending.retarget(self._final_path(digest, compressed))
        return digest

    def put_bytes(self, data: bytes | memoryview) -> Digest:
        """Store bytes in memory: hashed once (all cores when large), written without
        copies when stored raw; zstd'd only when a sample shows it pays."""
        view = memoryview(data).cast("B")
        digest = hash_bytes(view, self.algo)
        if self.has(digest):
            self._reused(digest)
            return digest
        if self._should_compress(view[:SAMPLE_BYTES]):
            rest = (view[i : i + CHUNK] for i in range(SAMPLE_BYTES, len(view), CHUNK))
            self._store_chunks(view[:SAMPLE_BYTES], rest, digest)
        else:
            self._install(digest, (view,), "")
        return digest

    def put_tensor(self, data: bytes | memoryview, dtype: str | None = None, parent: Digest | None = None,
                   ring: PlaneRing | None = None) -> Digest:
        """Store a tensor's bytes with the weight codec that pays: an XOR delta against
        ``parent`` (the same tensor of an earlier build, chosen by the caller) when that is
        clearly smaller, else byte planes, else raw. The content is hashed once; a frame is
        written block by block as it is encoded (``frameblobs.write_encoded``), its planes
        split into ``ring`` (this thread's, reused tensor after tensor; None = a fresh one)."""
        view = memoryview(data).cast("B")
        digest = hash_bytes(view, self.algo)
        if self.has(digest):
            self._reused(digest)
            return digest
        from trtcas.cas import frameblobs

        ring = ring or frameblobs.plane_ring()  # its buffer is mapped only if a frame is written
        parent_blob = self._delta_parent(parent, len(view))
        for candidate in frameblobs.encoding_candidates(view, dtype, parent_blob, max_chain_depth=self.max_chain_depth):
            if self._install_encoded(digest, view, candidate, ring):
                return digest
        self._install(digest, (view,), "")
        return digest

    def _install_encoded(self, digest: Digest, view: memoryview, candidate, ring: PlaneRing) -> bool:
        """Write the blob as a frame; False, leaving nothing, when the frame does not pay."""
        from trtcas.cas import frameblobs

        raw = self._raw_path(digest)
        path = raw.with_name(raw.name + TCX_SUFFIX)
        with atomic_writer(path, mode=0o444, durable=not self._batched()) as pending:
            if not frameblobs.write_encoded(pending.open_positional(direct=len(view) >= DIRECT_MIN_BYTES),
                                            view, candidate, ring):
                pending.discard()
                return False
        self._written(path, digest, TCX_SUFFIX)
        return True

    def _delta_parent(self, parent: Digest | None, size: int):
        """The parent as the codecs want it (content verified), or None when it cannot serve."""
        if parent is None or parent.size != size or parent.algo != self.algo:
            return None
        from trtcas.cas import frameblobs

        blob = self.locate(parent)
        upstream = self.parent_of(blob) if blob is not None else None
        try:
            content = self.content_view(parent)
        except BlobNotFound:
            return None
        return frameblobs.as_parent(parent, content, upstream[1] + 1 if upstream else 0)

    def _install(self, digest: Digest, parts: Sequence[bytes | memoryview], suffix: str) -> None:
        """Write already-hashed bytes (``parts``, in order: a raw blob is one part, a frame
        its unjoined pieces) as the blob's file (temp, fsync, read-only, rename)."""
        raw = self._raw_path(digest)
        path = raw.with_name(raw.name + suffix)
        with atomic_writer(path, mode=0o444, durable=not self._batched()) as pending:
            pending.write_parts(parts)
        self._written(path, digest, suffix)

    def _batched(self) -> bool:
        return getattr(self._batches, "pending", None) is not None

    def _written(self, path: Path, digest: Digest, suffix: str) -> None:
        """Record a new blob file: now, or (in a batch) once the batch's flush made it durable."""
        batch = getattr(self._batches, "pending", None)
        if batch is None:
            self.statcache.remember_written(path, digest, self._kind(suffix))
        else:
            batch.append((path, digest, self._kind(suffix)))

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Blobs written in this block (by this thread) skip their own fsyncs and are made
        durable together, with one ``syncfs``, when it ends: an action storing hundreds of
        tensors pays one flush, as ``cp -r`` + ``sync`` does. Until then a crash may leave a
        named blob with lost bytes; reads verify, so it is quarantined, never served (and
        nothing trusts it before the flush: its stat-cache entry is written after)."""
        if getattr(self._batches, "pending", None) is not None:
            yield  # nested: the outer batch flushes
            return
        self._batches.pending = pending = []
        try:
            yield
        finally:
            self._batches.pending = None
            if pending:
                sync_filesystem(self.blob_root)
                for path, digest, kind in pending:
                    self.statcache.remember_written(path, digest, kind)

    def put_tensors(self, items: Iterable[tuple[memoryview, str | None, Digest | None]],
                    workers: int = 4, ahead: int = 8) -> Iterator[Digest]:
        """``put_tensor`` for a stream of (data, dtype, parent), ``workers`` at a time, digests
        in order (at most ``ahead`` held). A large blob is written around the page cache
        (``direct_io``), so its writer waits for the disk: four workers keep two cores
        encoding while others wait. The caller's ``batch()`` covers the workers' writes."""
        from trtcas.cas.frameblobs import plane_ring

        pending = getattr(self._batches, "pending", None)
        rings = threading.local()  # one per worker, released with this call

        def put(item: tuple[memoryview, str | None, Digest | None]) -> Digest:
            self._batches.pending = pending  # adopt the caller's batch in this worker thread
            ring = getattr(rings, "ring", None)
            if ring is None:
                ring = rings.ring = plane_ring()
            try:
                return self.put_tensor(*item, ring=ring)
            finally:
                self._batches.pending = None

        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="trtcas-put") as pool:
            yield from ordered_results(pool, put, items, ahead)

    def _kind(self, suffix: str) -> str:
        """The stat cache's name for "the content digest of a blob file stored so"."""
        return {"": self.algo, ZSTD_SUFFIX: f"{self.algo}+zstd", TCX_SUFFIX: f"{self.algo}+tcx"}[suffix]

    def put_stream(self, stream: BinaryIO) -> Digest:
        """Store a stream of unknown content in bounded memory."""
        first = stream.read(SAMPLE_BYTES)
        return self._store_chunks(first, iter(lambda: stream.read(CHUNK), b""), None)

    def put_verified_stream(self, stream: BinaryIO, expected: Digest) -> Digest:
        """Store bytes from an untrusted source (a remote cache) only if they are ``expected``.

        The bytes are hashed while they are written to a temp file beside their final place
        and installed only if hash and size match, so wrong bytes are never visible as a
        blob, not even briefly. At most ``expected.size + 1`` bytes are read: a server that
        sends an endless body cannot fill the disk.
        """
        remaining = expected.size + 1

        def read(amount: int) -> bytes:
            nonlocal remaining
            chunk = stream.read(min(amount, remaining)) if remaining else b""
            remaining -= len(chunk)
            return chunk

        first = read(SAMPLE_BYTES)
        return self._store_chunks(first, iter(lambda: read(CHUNK), b""), expected, untrusted=True)

    def put_file(self, path: str | os.PathLike, consume: bool = False) -> Digest:
        """Store a file; hashes through the stat cache so an already-stored file costs a stat.

        ``consume``: the file is the caller's to give away (an action's scratch output, such
        as a streamed engine plan as large as the model): when it is to be stored raw it is
        renamed into the store instead of copied."""
        path = Path(path)
        try:
            digest = self.statcache.digest_of(path, self.algo)
            if self.has(digest):
                self._reused(digest)
                return digest
            with open(path, "rb") as stream:
                first = stream.read(SAMPLE_BYTES)
                if consume and not self._should_compress(first) and self._adopt(path, digest):
                    return digest
                return self._store_chunks(first, iter(lambda: stream.read(CHUNK), b""), digest)
        except FileNotFoundError as exc:
            raise TrtcasError(f"cannot store {path}: no such file") from exc
        except IsADirectoryError as exc:
            raise TrtcasError(f"cannot store {path}: it is a directory, not a file") from exc
        except PermissionError as exc:
            raise TrtcasError(f"cannot store {path}: permission denied") from exc

    def _adopt(self, path: Path, digest: Digest) -> bool:
        """Rename a file already hashed as ``digest`` into its raw blob path (same
        filesystem only; False otherwise, and the caller copies)."""
        final = self._raw_path(digest)
        try:
            os.chmod(path, 0o444)
            final.parent.mkdir(parents=True, exist_ok=True)
            if not self._batched():
                with open(path, "rb") as stream:
                    os.fsync(stream.fileno())
            os.replace(path, final)
        except OSError:
            return False
        if not self._batched():
            fsync_dir(final.parent)
        self._written(final, digest, "")
        return True

    # ---- reading ----------------------------------------------------------------------
    def _content_digest(self, blob: StoredBlob) -> Digest:
        if blob.frame:
            return hash_bytes(self._decode(blob, 0), self.algo)
        if not blob.compressed:
            return self.statcache.digest_of(blob.path, self.algo)
        return self.statcache.digest_of(blob.path, self.algo, hash_zstd_file, kind=f"{self.algo}+zstd")

    def check(self, blob: StoredBlob, trust_statcache: bool = True) -> str | None:
        """Why ``blob`` does not hold its digest's content, or None if it does."""
        try:
            if not stat.S_ISREG(blob.path.lstat().st_mode):
                return "not a regular file (a symlink or a directory)"
            if not trust_statcache:
                self.statcache.forget(blob.path)
            actual = self._content_digest(blob)
        except (OSError, zstandard.ZstdError, _BadFrame) as exc:
            return f"unreadable ({exc})"
        except BlobNotFound as exc:
            return f"its delta parent cannot be read ({exc})"
        return None if actual == blob.digest else f"content is {actual}"

    def _located(self, digest: Digest) -> StoredBlob:
        blob = self.locate(digest)
        if blob is None:
            raise BlobNotFound(f"blob {digest} is not in the cache at {self.root}")
        return blob

    def _reject(self, blob: StoredBlob, problem: str) -> CorruptBlob:
        self.quarantine(blob.digest, blob.path, problem)
        return CorruptBlob(f"blob {blob.digest} was corrupt on disk and has been quarantined; it counts as a miss")

    def _verified(self, digest: Digest) -> StoredBlob:
        blob = self._located(digest)
        problem = self.check(blob)
        if problem:
            raise self._reject(blob, problem)
        return blob

    def verify(self, digest: Digest) -> bool:
        """Re-hash a blob from its bytes (bypassing the stat cache); quarantine it if bad."""
        blob = self.locate(digest)
        if blob is None:
            return False
        problem = self.check(blob, trust_statcache=False)
        if problem:
            self.quarantine(digest, blob.path, problem)
        return problem is None

    def _decode(self, blob: StoredBlob, depth: int) -> memoryview:
        """A frame blob's decoded content, its parent read (verified) first. Not verified
        itself; raises ``_BadFrame`` for a frame that cannot be decoded, ``BlobNotFound``
        when its parent cannot be read."""
        from trtcas.cas import frameblobs

        if depth > self.max_chain_depth:
            raise _BadFrame(f"delta chain deeper than {self.max_chain_depth}")
        try:
            encoded = frameblobs.read_frame(blob.path)
            upstream = frameblobs.parent_of(frameblobs.frame_info(encoded))
            parent = None
            if upstream is not None:
                content = self._content(upstream[0], depth + 1)
                parent = frameblobs.as_parent(upstream[0], content, upstream[1])
            return frameblobs.decode(encoded, blob.digest.size, parent)
        except frameblobs.CodecError as exc:
            raise _BadFrame(str(exc)) from exc

    def _content(self, digest: Digest, depth: int) -> memoryview:
        blob = self._located(digest)
        if not blob.frame:
            return self._mapped(digest) if not blob.compressed else memoryview(self.get_bytes(digest))
        try:
            content = self._decode(blob, depth)
            known = self.statcache.lookup(blob.path, self.algo, self._kind(TCX_SUFFIX)) == digest
            problem = None if known or hash_bytes(content, self.algo) == digest else "decodes to other content"
        except (OSError, _BadFrame) as exc:
            problem = f"undecodable ({exc})"
        if problem:
            raise self._reject(blob, problem)
        return content

    def _mapped(self, digest: Digest) -> memoryview:
        """A raw blob's bytes, verified (through the stat cache), mapped rather than read."""
        blob = self._verified(digest)
        if blob.stored_size == 0:
            return memoryview(b"")
        with open(blob.path, "rb") as stream:
            return memoryview(mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ))

    def content_view(self, digest: Digest) -> memoryview:
        """The blob's content, verified, as a read-only bytes-like view (a frame is decoded,
        its delta parents first, and hashed; a corrupt one is quarantined: a miss)."""
        return self._content(digest, 0).toreadonly()

    def open(self, digest: Digest) -> BinaryIO:
        """A readable stream of the blob's (decompressed) bytes, verified first."""
        located = self.locate(digest)
        if located is not None and located.frame:
            return io.BytesIO(self._content(digest, 0))
        blob = self._verified(digest)
        try:
            raw = open(blob.path, "rb")
        except FileNotFoundError as exc:
            raise BlobNotFound(f"blob {digest} vanished while being read (evicted?)") from exc
        if not blob.compressed:
            return raw
        return zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)

    def get_bytes(self, digest: Digest) -> bytes:
        located = self.locate(digest)
        if located is not None and located.frame:
            return bytes(self._content(digest, 0))
        with self.open(digest) as stream:
            return stream.read()

    def materialize(self, digest: Digest, dest: str | os.PathLike, mode: str = "auto") -> str:
        """Make ``dest`` a read-only file with the blob's bytes; returns how: reflink,
        hardlink, copy or decompress.

        ``dest`` is replaced atomically, never written in place: if it was a hardlink into
        the store, writing through it would corrupt the store.
        """
        located = self.locate(digest)
        if located is not None and located.frame:
            content = self._content(digest, 0)
            with atomic_writer(dest, mode=0o444) as pending:
                pending.open().write(content)
            return "decode"
        blob = self._verified(digest)
        with atomic_writer(dest, mode=0o444) as pending:
            method = self._materialize_into(blob, pending.temp, mode)
        return method

    def _materialize_into(self, blob: StoredBlob, temp: Path, mode: str) -> str:
        if blob.compressed:
            with open(blob.path, "rb") as src, open(temp, "wb") as out:
                zstandard.ZstdDecompressor().copy_stream(src, out, write_size=CHUNK)
            return "decompress"
        if mode in ("auto", "reflink") and try_reflink(blob.path, temp):
            return "reflink"
        if mode in ("auto", "hardlink"):
            try:
                os.link(blob.path, temp)
                return "hardlink"
            except OSError as exc:
                if mode == "hardlink" or exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                    raise
        shutil.copyfile(blob.path, temp)
        return "copy"

    # ---- removing ---------------------------------------------------------------------
    def delete(self, digest: Digest) -> int:
        """Remove every stored form of ``digest``; returns bytes freed on disk."""
        freed = 0
        raw = self._raw_path(digest)
        for path in (raw.with_name(raw.name + suffix) for suffix in _SUFFIXES):
            try:
                freed += path.stat().st_size
                path.unlink()
            except FileNotFoundError:
                pass
        return freed

    def quarantine(self, digest: Digest, path: Path, reason: str) -> None:
        """Move a bad blob aside (for a post-mortem) so it is never served again."""
        log.warning("quarantining %s: %s", digest, reason)
        self.quarantine_root.mkdir(parents=True, exist_ok=True)
        target = self.quarantine_root / f"{path.name}.{time.time_ns()}"
        try:
            os.replace(path, target)
        except FileNotFoundError:
            pass
        except OSError:
            path.unlink(missing_ok=True)


class _BadFrame(TrtcasError):
    """A frame blob that cannot be decoded (bad header, wrong parent, bad planes)."""



def _mismatch(expected: Digest, actual: Digest | None, untrusted: bool) -> TrtcasError:
    read = f"{actual.size} bytes hashing to {actual.short}" if actual else f"not {expected.size} bytes"
    if untrusted:
        return DigestMismatch(f"received {read} for {expected}; discarded")
    return ContentChanged(f"content changed while being stored (expected {expected}, read {read}); retry once it is stable")
