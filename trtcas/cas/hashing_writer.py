"""Writing a blob while hashing it: the one pass that both stores and names the bytes."""

from __future__ import annotations

from typing import BinaryIO

import zstandard

from trtcas.cas.digest import Digest, new_hasher


class HashingWriter:
    """Writes raw or zstd-compressed bytes to ``out`` while hashing the raw bytes."""

    def __init__(self, out: BinaryIO, algo: str, compress: bool, level: int, size: int = -1):
        self._hasher = new_hasher(algo)
        self._size = 0
        self._algo = algo
        self._raw_out = out
        self._sink = (
            zstandard.ZstdCompressor(level=level).stream_writer(out, size=size, closefd=False) if compress else out
        )

    def write(self, data: bytes) -> None:
        self._hasher.update(data)
        self._size += len(data)
        self._sink.write(data)

    def finish(self) -> Digest:
        if self._sink is not self._raw_out:
            self._sink.flush(zstandard.FLUSH_FRAME)
            self._sink.close()
        self._raw_out.flush()
        return Digest(self._algo, self._hasher.hexdigest(), self._size)
