"""safetensors: the one reader, the one streaming atomic writer, the one dtype table.

The format is a u64 little-endian header length, a JSON header (name -> dtype code, shape,
byte extent; plus ``__metadata__``) and the tensors' bytes back to back. numpy cannot give
bfloat16 a buffer format and the ``safetensors`` package cannot write it from numpy, so the
few lines of the format are here, used by every converter and output writer.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import struct
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import ml_dtypes  # numpy's bfloat16; a dependency of onnx, which trtcas requires
import numpy as np

from trtcas.cas.atomic import DIRECT_MIN_BYTES, atomic_writer, start_writeback
from trtcas.cas.digest import DEFAULT_ALGO, hash_bytes
from trtcas.cas.direct_io import DirectFile
from trtcas.cas.manifest import TensorEntry, TensorManifest
from trtcas.errors import TrtcasError

# safetensors dtype code <-> numpy dtype: the one table.
DTYPE_OF_CODE: Mapping[str, np.dtype] = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "I64": np.dtype(np.int64), "I32": np.dtype(np.int32), "I16": np.dtype(np.int16), "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_),
}
CODE_OF_DTYPE: Mapping[np.dtype, str] = {dtype: code for code, dtype in DTYPE_OF_CODE.items()}
# Names numpy does not know by itself (manifests of canonical networks use numpy names).
_EXTRA_NAMES = {"bfloat16": ml_dtypes.bfloat16, "float8_e4m3fn": ml_dtypes.float8_e4m3fn}
FLOAT_CODES = ("F16", "BF16", "F32")


class BadSafetensors(TrtcasError):
    """A ``.safetensors`` file whose header or extent is not what the format says."""


def numpy_dtype(name: str) -> np.dtype:
    """A dtype by safetensors code (``F16``) or numpy name (``float16``, ``bfloat16``)."""
    if name in DTYPE_OF_CODE:
        return DTYPE_OF_CODE[name]
    return np.dtype(_EXTRA_NAMES.get(name, name))


def dtype_code(dtype: np.dtype | str) -> str:
    """The safetensors code of a numpy dtype (or of a code or numpy name)."""
    if isinstance(dtype, str) and dtype in DTYPE_OF_CODE:
        return dtype
    resolved = numpy_dtype(dtype) if isinstance(dtype, str) else np.dtype(dtype)
    try:
        return CODE_OF_DTYPE[resolved]
    except KeyError:
        raise TrtcasError(f"dtype {resolved} has no safetensors code") from None


def raw_bytes(array: np.ndarray) -> memoryview:
    """The array's bytes without a copy when contiguous (bf16 has no buffer format of its own)."""
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8).data


# ---- reading ------------------------------------------------------------------------------
@dataclass(frozen=True)
class SafetensorsLayout:
    """Where each tensor's bytes sit inside a ``.safetensors`` file."""

    data_start: int
    tensors: dict  # name -> (dtype code, shape, begin, end), offsets absolute in the file
    metadata: dict


def read_layout(path: str | os.PathLike) -> SafetensorsLayout:
    """Parse the header and check every extent, so a truncated download is reported by
    name instead of hashing garbage."""
    path = Path(path)
    try:
        file_size = path.stat().st_size
        with open(path, "rb") as stream:
            head = stream.read(8)
            if len(head) < 8:
                raise BadSafetensors(f"{path}: truncated safetensors file (no header); re-download or re-save it")
            (header_len,) = struct.unpack("<Q", head)
            if header_len > file_size - 8 or header_len > 100 << 20:
                raise BadSafetensors(f"{path}: safetensors header length {header_len} exceeds the file; the file is truncated or not safetensors")
            header = json.loads(stream.read(header_len))
    except (OSError, ValueError) as exc:
        if isinstance(exc, BadSafetensors):
            raise
        raise BadSafetensors(f"{path}: cannot read safetensors header ({exc})") from exc
    if not isinstance(header, dict):
        raise BadSafetensors(f"{path}: safetensors header is not a JSON object")
    data_start = 8 + header_len
    metadata = header.pop("__metadata__", {}) or {}
    tensors = {}
    for name, info in header.items():
        try:
            begin, end = info["data_offsets"]
            dtype, shape = info["dtype"], tuple(int(d) for d in info["shape"])
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in (begin, end)):
                raise TypeError("data_offsets must be integers")
        except (KeyError, TypeError, ValueError) as exc:
            raise BadSafetensors(f"{path}: malformed header entry for tensor {name!r}; re-download or re-save it") from exc
        if not 0 <= begin <= end:
            raise BadSafetensors(f"{path}: tensor {name!r} has data_offsets {[begin, end]}, not an ascending pair; "
                                 "the header is corrupt, re-download or re-save it")
        if data_start + end > file_size:
            raise BadSafetensors(
                f"{path}: tensor {name!r} extends past the end of the file ({data_start + end} > {file_size} bytes); "
                "the file is truncated, re-download or re-save it"
            )
        tensors[name] = (dtype, shape, data_start + begin, data_start + end)
    _check_disjoint(path, tensors)
    return SafetensorsLayout(data_start, tensors, metadata)


def _check_disjoint(path: Path, tensors: dict) -> None:
    """Tensors may not share bytes (the format says so, and safetensors refuses such files):
    a header that overlaps two extents is corrupt, not two tensors with equal values."""
    extents = sorted((begin, end, name) for name, (_, _, begin, end) in tensors.items() if end > begin)
    for (_, end, first), (begin, _, second) in zip(extents, extents[1:]):
        if begin < end:
            raise BadSafetensors(f"{path}: tensors {first!r} and {second!r} overlap in the file; "
                                 "the header is corrupt, re-download or re-save it")


def map_tensors(path: str | os.PathLike, layout: SafetensorsLayout | None = None) -> dict[str, np.ndarray]:
    """Every tensor of a file by name, memory-mapped read-only (nothing is copied).

    The arrays keep the map open, so whatever is built from them can use them as long as it lives.
    """
    path = Path(path)
    layout = layout or read_layout(path)
    if path.stat().st_size == 0:
        return {}
    with open(path, "rb") as stream:
        region = mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ)
    arrays = {}
    for name, (code, shape, begin, end) in layout.tensors.items():
        if code not in DTYPE_OF_CODE:
            raise BadSafetensors(f"{path}: tensor {name!r} has dtype {code}, which trtcas does not read")
        dtype = DTYPE_OF_CODE[code]
        count = math.prod(shape)
        if count * dtype.itemsize != end - begin:
            raise BadSafetensors(f"{path}: tensor {name!r} byte size disagrees with its shape {list(shape)}")
        arrays[name] = np.frombuffer(region, dtype, count, begin).reshape(shape)
    return arrays


def hash_tensors(path: str | os.PathLike, algo: str = DEFAULT_ALGO) -> TensorManifest:
    """Per-tensor digests of a ``.safetensors`` file, reading tensor bytes through mmap."""
    layout = read_layout(path)
    entries = []
    with open(path, "rb") as stream:
        size = os.fstat(stream.fileno()).st_size
        view = mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        try:
            for name, (dtype, shape, begin, end) in layout.tensors.items():
                with memoryview(view)[begin:end] as span:
                    entries.append(TensorEntry(name, dtype, shape, hash_bytes(span, algo)))
        finally:
            if size:
                view.close()
    return TensorManifest.of(entries)


# ---- writing ------------------------------------------------------------------------------
@dataclass(frozen=True)
class TensorSlot:
    """A tensor a writer will write: name, safetensors dtype code, shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * DTYPE_OF_CODE[self.dtype].itemsize


def header_bytes(slots: Iterable[TensorSlot], metadata: Mapping[str, str] | None = None) -> bytes:
    """The length-prefixed JSON header for tensors laid out back to back in the given order.

    Padded with spaces to a multiple of 8 bytes, as the format allows, so the data is aligned.
    """
    header: dict = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for slot in slots:
        header[slot.name] = {"dtype": slot.dtype, "shape": list(slot.shape), "data_offsets": [offset, offset + slot.nbytes]}
        offset += slot.nbytes
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text


def encode(tensors: Iterable[tuple[str, np.ndarray]], metadata: Mapping[str, str] | None = None) -> bytes:
    """Small in-memory tensors -> safetensors bytes."""
    items = [(name, np.ascontiguousarray(array)) for name, array in tensors]
    slots = [TensorSlot(name, dtype_code(array.dtype), tuple(array.shape)) for name, array in items]
    return header_bytes(slots, metadata) + b"".join(bytes(raw_bytes(array)) for _, array in items)


DEFAULT_METADATA = {"format": "pt"}  # what torch's safetensors writes, so readers treat it as theirs


def write_streamed(path: str | os.PathLike, slots: Iterable[TensorSlot], chunks: Iterator[tuple[str, Iterable[bytes | memoryview]]],
                   metadata: Mapping[str, str] | None = None, mode: int | None = None) -> None:
    """Write a file whose layout is known in advance, one tensor at a time, atomically.

    ``chunks`` yields (name, byte chunks) per slot in order; nothing is held in memory but
    the chunk being written. The file appears whole or not at all.
    """
    slots = tuple(slots)
    with atomic_writer(path, mode=mode) as pending:
        out = pending.open_positional(direct=sum(slot.nbytes for slot in slots) >= DIRECT_MIN_BYTES)
        out.write(header_bytes(slots, metadata or DEFAULT_METADATA))
        for slot, (name, parts) in zip(slots, chunks, strict=True):
            if name != slot.name:
                raise TrtcasError(f"{path}: tensor {name!r} arrived where {slot.name!r} was planned; report this bug")
            written = 0
            for part in parts:
                out.write(part)
                written += len(part)
            if written != slot.nbytes:
                raise TrtcasError(f"{path}: tensor {name!r} has {written} bytes, its shape needs {slot.nbytes}")


class SlotFileWriter:
    """Writes a file laid out for ``slots`` (in their order) while the tensors arrive in any order.

    The header is written first and each tensor at its own offset (``pwrite``), so a
    producer whose order differs from the file's writes the same bytes ``write_streamed``
    would for these slots. ``finish`` checks every slot was written exactly once; a writer
    that is not finished leaves no file (use it as a context manager).

    The writes run on a thread of the writer's own (``pwrite`` releases the GIL): writing
    a model's worth of checkpoint then overlaps converting and storing the next tensors
    instead of holding up the thread that produces them. ``write`` checks the tensor at
    once and returns; at most ``WRITES_AHEAD`` tensors wait (the caller must not change an
    array it handed over); a failed write is raised by the next ``write`` or ``finish``.
    ``finish`` and ``__exit__`` wait for every write before the file is closed."""

    WRITES_AHEAD = 4
    WRITERS = 2  # a write around the page cache waits for the disk: two keep it busy

    def __init__(self, path: str | os.PathLike, slots: Iterable[TensorSlot],
                 metadata: Mapping[str, str] | None = None):
        self.path = Path(path)
        self._slots = {slot.name: slot for slot in slots}
        header = header_bytes(self._slots.values(), metadata or DEFAULT_METADATA)
        self._offsets, at = {}, len(header)
        for slot in self._slots.values():
            self._offsets[slot.name], at = at, at + slot.nbytes
        self._file = DirectFile(self.path, direct=at >= DIRECT_MIN_BYTES)
        self._pending = set(self._slots)
        self._writes: deque[Future] = deque()
        self._thread = ThreadPoolExecutor(max_workers=self.WRITERS, thread_name_prefix="trtcas-file")
        self._pwrite(header, 0)

    def _pwrite(self, data: bytes | memoryview, offset: int) -> None:
        self._file.pwrite(data, offset)
        if not self._file.direct:
            start_writeback(self._file.fileno())  # the disk writes this tensor while the next is converted

    def write(self, name: str, array: np.ndarray) -> None:
        slot = self._slots.get(name)
        if slot is None or name not in self._pending:
            raise TrtcasError(f"{self.path}: tensor {name!r} was not planned for this file, or came twice; report this bug")
        if dtype_code(array.dtype) != slot.dtype or tuple(array.shape) != slot.shape:
            raise TrtcasError(f"{self.path}: tensor {name!r} is {dtype_code(array.dtype)}{list(array.shape)}, "
                              f"planned as {slot.dtype}{list(slot.shape)}; report this bug")
        self._pending.discard(name)
        self._writes.append(self._thread.submit(self._pwrite, raw_bytes(array), self._offsets[name]))
        while len(self._writes) > self.WRITES_AHEAD or (self._writes and self._writes[0].done()):
            self._writes.popleft().result()

    def _drain(self) -> None:
        """Wait for every write handed over; raise the first that failed."""
        try:
            while self._writes:
                self._writes.popleft().result()
        finally:
            self._thread.shutdown(wait=True, cancel_futures=True)

    def finish(self) -> None:
        self._drain()
        if self._pending:
            raise TrtcasError(f"{self.path}: tensors {sorted(self._pending)[:3]} were planned but never written; report this bug")
        self._file.close()

    def __enter__(self) -> "SlotFileWriter":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if not self._file.closed:
            try:
                self._drain()
            except Exception:  # noqa: BLE001 - the file is removed anyway; the error that brought us here is the one to report
                pass
            finally:
                try:
                    self._file.close()
                except OSError:
                    pass  # closing writes the last blocks; on a full disk that fails again
                self.path.unlink(missing_ok=True)


def write_arrays(path: str | os.PathLike, slots: Iterable[TensorSlot], arrays: Iterator[tuple[str, np.ndarray]],
                 mode: int | None = None) -> None:
    """``write_streamed`` for arrays computed one at a time."""
    write_streamed(path, slots, ((name, (raw_bytes(array),)) for name, array in arrays), mode=mode)
