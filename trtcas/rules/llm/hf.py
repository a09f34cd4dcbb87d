"""A Hugging Face checkpoint directory: its tensors by name across one ``model.safetensors``
or the shards its ``model.safetensors.index.json`` names, memory-mapped and sliced lazily.
"""

from __future__ import annotations

import json
import mmap
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import ml_dtypes  # numpy's bfloat16; a dependency of onnx, which trtcas requires
import numpy as np

from trtcas.cas import mapped_files
from trtcas.rules.formats.safetensors import DTYPE_OF_CODE, FLOAT_CODES
from trtcas.rules.formats.safetensors import read_layout as read_safetensors_layout
from trtcas.rules.llm.spec import TARGET_DTYPES, ConvertError

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
@dataclass(frozen=True)
class SourceTensor:
    """Where one HF tensor's bytes are: file, safetensors dtype code, shape, byte extent."""

    file: Path
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


@dataclass(frozen=True)
class HFCheckpoint:
    """A HF model directory's tensors by name, across one file or an index of shards.

    Opening it reads only headers, but every file's extents are checked then
    (``read_safetensors_layout``), so a truncated shard is reported before conversion starts.
    """

    directory: Path
    files: tuple[Path, ...]
    tensors: Mapping[str, SourceTensor]

    def locate(self, name: str) -> SourceTensor:
        try:
            return self.tensors[name]
        except KeyError:
            searched = ", ".join(f.name for f in self.files)
            raise ConvertError(f"{self.directory}: no tensor {name!r} in the HF checkpoint (searched {searched})") from None


def open_hf_checkpoint(hf_dir: str | os.PathLike) -> HFCheckpoint:
    """Index the tensors of ``model.safetensors`` or of the shards named by its index json."""
    directory = Path(hf_dir)
    index_path = directory / INDEX_FILE
    if index_path.exists():
        weight_map, shard_names = _read_index(index_path)
    elif (directory / SINGLE_FILE).exists():
        weight_map, shard_names = None, [SINGLE_FILE]
    else:
        raise ConvertError(f"{directory}: no {SINGLE_FILE} or {INDEX_FILE}; point at a HF safetensors checkpoint")

    tensors: dict[str, SourceTensor] = {}
    files = []
    for shard_name in shard_names:
        path = directory / shard_name
        if not path.exists():
            raise ConvertError(f"{index_path}: names shard {shard_name} but {path} is missing")
        files.append(path)
        layout = read_safetensors_layout(path)
        for name, (dtype, shape, begin, end) in layout.tensors.items():
            if weight_map is None or weight_map.get(name) == shard_name:
                tensors[name] = SourceTensor(path, dtype, shape, begin, end)
    if weight_map is not None:
        for name, shard_name in weight_map.items():
            if name not in tensors:
                raise ConvertError(f"{directory / shard_name}: lacks tensor {name!r}, which {INDEX_FILE} places there")
    return HFCheckpoint(directory, tuple(files), tensors)


def checkpoint_files(hf_dir: str | os.PathLike) -> list[str]:
    """The files of a HF checkpoint dir the convert reads, relative to it: ``config.json`` and
    the weights (``model.safetensors``, or the index and the shards it names). Only these are
    the convert's inputs, so a README, tokenizer or ``generation_config.json`` beside them
    never re-runs it. The dir is listed, not probed, so a build's stamp watches it."""
    directory = Path(hf_dir)
    present = set(os.listdir(directory))
    if INDEX_FILE in present:
        return ["config.json", INDEX_FILE, *_read_index(directory / INDEX_FILE)[1]]
    if SINGLE_FILE in present:
        return ["config.json", SINGLE_FILE]
    raise ConvertError(f"{directory}: no {SINGLE_FILE} or {INDEX_FILE}; point at a HF safetensors checkpoint")


def _read_index(index_path: Path) -> tuple[dict, list[str]]:
    """A safetensors index's weight map and the shard names it uses (sorted), checked."""
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConvertError(f"{index_path}: not a safetensors index with a weight_map ({exc})") from exc
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise ConvertError(f"{index_path}: weight_map must map tensor names to shard file names; "
                           "re-download the index or remove it (with a single model.safetensors)")
    shard_names = sorted(set(weight_map.values()))
    for shard_name in shard_names:
        _check_shard_name(index_path, shard_name)
    return weight_map, shard_names


def _check_shard_name(index_path: Path, shard_name: str) -> None:
    """A shard must be one of the checkpoint dir's own files: a relative path inside it, not
    hidden. The convert runs on a dir of links to the files its key holds
    (``rules.llm.source_files``); a path leading out of the dir would be linked, and read,
    outside it."""
    parts = Path(shard_name).parts
    if not parts or Path(shard_name).is_absolute() or ".." in parts or any(p.startswith(".") for p in parts):
        raise ConvertError(f"{index_path}: shard {shard_name!r} is not a file inside the checkpoint dir "
                           "(absolute, '..' or hidden); the index may name only the dir's own shard files")


def _map_source(source: SourceTensor, name: str) -> np.ndarray:
    """A read-only memory map of one HF tensor in its stored dtype (bf16 as uint16).

    Slicing the map before converting keeps memory at the size of the slice, not the tensor.
    """
    if source.dtype not in FLOAT_CODES:
        raise ConvertError(f"{source.file}: tensor {name!r} has dtype {source.dtype}; expected one of F16, BF16, F32")
    stored = np.dtype(np.uint16) if source.dtype == "BF16" else DTYPE_OF_CODE[source.dtype]
    count = int(np.prod(source.shape, dtype=np.int64))
    if count * stored.itemsize != source.end - source.begin:
        raise ConvertError(f"{source.file}: tensor {name!r} byte size disagrees with its shape {source.shape}")
    if count == 0:
        return np.zeros(source.shape, stored)
    whole = mapped_files.shared(source.file)  # the mapping the action's key was hashed through
    if whole is not None and len(whole) >= source.end:
        return np.frombuffer(whole, stored, count, source.begin).reshape(source.shape)
    start = source.begin - source.begin % mmap.ALLOCATIONGRANULARITY
    with open(source.file, "rb") as stream:
        region = mmap.mmap(stream.fileno(), source.end - start, access=mmap.ACCESS_READ, offset=start)
    _populate(region)
    return np.frombuffer(region, stored, count, source.begin - start).reshape(source.shape)


MADV_POPULATE_READ = 22  # Linux 5.14: map every page of a range in one call


def _populate(region: mmap.mmap) -> None:
    """Map the tensor's pages now, in one call, instead of one fault per 64 KiB as the
    converter and the hasher first touch them (the file is in the page cache: a cold
    convert reads what the planner just hashed). Older kernels say EINVAL: then faults."""
    try:
        region.madvise(MADV_POPULATE_READ)
    except (OSError, ValueError):
        pass


def bf16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 is the top half of a float32, so widening is a 16-bit shift (exact)."""
    return (np.asarray(bits, np.uint16).astype(np.uint32) << 16).view(np.float32)


def read_tensor(ckpt: HFCheckpoint, name: str, shape: tuple[int, ...], rows: slice = slice(None),
          cols: slice = slice(None)) -> np.ndarray:
    """One HF tensor (or a row/column slice of it) in its stored float dtype (bf16 typed as
    ``ml_dtypes.bfloat16``), after checking its shape.

    Kept in the stored dtype: widening every fp16 tensor to float32 and back was half the
    convert time, and a same-dtype split is exact without it. Casts happen once, in
    :func:`cast_to`; quantization widens what it needs itself.
    """
    source = ckpt.locate(name)
    if tuple(source.shape) != tuple(shape):
        raise ConvertError(
            f"{source.file}: tensor {name!r} has shape {tuple(source.shape)}, but config.json implies {tuple(shape)}"
        )
    stored = _map_source(source, name)
    view = stored[rows] if stored.ndim == 1 else stored[rows, cols]
    return view.view(ml_dtypes.bfloat16) if source.dtype == "BF16" else view


def read_hf_config(path: str | os.PathLike) -> dict:
    """Read a HF ``config.json`` (``path`` is the file or its directory) and have its
    architecture check it, so a wrong or foreign config fails in one line before any tensor
    is read. A config without ``architectures`` is taken as Llama, as older exports were."""
    from trtcas.rules.llm.architectures import architecture

    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConvertError(f"{path}: no HF config.json there; point at a HF model directory") from None
    except (OSError, ValueError) as exc:
        raise ConvertError(f"{path}: cannot read HF config ({exc})") from exc
    if not isinstance(config, dict):
        raise ConvertError(f"{path}: HF config is not a JSON object")
    names = config.get("architectures") or ["LlamaForCausalLM"]
    if not isinstance(names, list) or len(names) != 1 or not isinstance(names[0], str):
        raise ConvertError(f"{path}: architectures must name one architecture, got {names!r}")
    architecture(names[0], str(path)).check_hf_config(config, path)
    source_dtype = config.get("torch_dtype", config.get("dtype"))
    if source_dtype is not None and source_dtype not in TARGET_DTYPES:
        raise ConvertError(f"{path}: unknown torch_dtype {source_dtype!r}; expected one of {', '.join(TARGET_DTYPES)}")
    return config


def hf_architecture(config: Mapping) -> str:
    """The architecture name of a config ``read_hf_config`` accepted."""
    return (config.get("architectures") or ["LlamaForCausalLM"])[0]
