"""Tensors in the CAS: one blob per tensor, a manifest per set, and back to arrays or files.

Manifests name dtypes either by numpy name (``float32``, from canonical networks) or by
safetensors code (``F16``, from converted checkpoints); both decode here. A fine-tune that
changed three tensors stores three blobs: the rest are already in the store by digest.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import ml_dtypes
import numpy as np

from trtcas.cas.atomic import fsync_dir, temp_path_beside
from trtcas.cas.digest import TensorEntry, TensorManifest
from trtcas.errors import TrtcasError

SAFETENSORS_CODES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
    "F8_E4M3": ml_dtypes.float8_e4m3fn,
}
_CODE_OF_NUMPY = {np.dtype(t): code for code, t in SAFETENSORS_CODES.items()}
_SPECIAL_NAMES = {"bfloat16": ml_dtypes.bfloat16, "float8_e4m3fn": ml_dtypes.float8_e4m3fn}


def numpy_dtype(name: str) -> np.dtype:
    if name in SAFETENSORS_CODES:
        return np.dtype(SAFETENSORS_CODES[name])
    return np.dtype(_SPECIAL_NAMES.get(name, name))


def safetensors_code(dtype: np.dtype) -> str:
    return _CODE_OF_NUMPY[np.dtype(dtype)]


def raw_bytes(array: np.ndarray) -> memoryview:
    """The array's bytes without a copy when contiguous (bf16 has no buffer format of its own)."""
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8).data


def store_tensors(blobs, tensors: Iterable[tuple[str, np.ndarray]]) -> TensorManifest:
    """Store each tensor as its own blob; returns the manifest (safetensors dtype codes)."""
    entries = []
    for name, array in tensors:
        digest = blobs.put_bytes(bytes(raw_bytes(array)))
        entries.append(TensorEntry(name, safetensors_code(array.dtype), tuple(array.shape), digest))
    return TensorManifest.of(entries)


def load_tensors(blobs, manifest: TensorManifest) -> dict[str, np.ndarray]:
    """name -> array, read (and verified) from the store."""
    return {
        e.name: np.frombuffer(blobs.get_bytes(e.digest), dtype=numpy_dtype(e.dtype)).reshape(e.shape)
        for e in manifest.entries
    }


def safetensors_matches(path: Path, manifest: TensorManifest) -> bool:
    """Whether ``path`` already holds exactly these tensors (names, dtypes, shapes, bytes)."""
    from trtcas.cas.digest import hash_safetensors

    try:
        found = hash_safetensors(path, algo=manifest.entries[0].digest.algo if manifest.entries else "blake3")
    except (OSError, TrtcasError):
        return False
    want = {e.name: (numpy_dtype(e.dtype), e.shape, e.digest) for e in manifest.entries}
    have = {e.name: (numpy_dtype(e.dtype), e.shape, e.digest) for e in found.entries}
    return want == have


def write_safetensors(blobs, manifest: TensorManifest, dest: Path) -> None:
    """Assemble a ``.safetensors`` file from stored tensors, streaming, atomically."""
    from trtcas.rules.convert import OutputTensor, safetensors_header

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    header = safetensors_header(
        [OutputTensor(e.name, e.dtype if e.dtype in SAFETENSORS_CODES else safetensors_code(numpy_dtype(e.dtype)), e.shape)
         for e in manifest.entries],
        {"format": "pt"},
    )
    temp = temp_path_beside(dest)
    try:
        with open(temp, "wb") as out:
            out.write(header)
            for entry in manifest.entries:
                with blobs.open(entry.digest) as stream:
                    while chunk := stream.read(1 << 20):
                        out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, 0o444)
        os.replace(temp, dest)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_dir(dest.parent)
