"""A generated Llama-style HF checkpoint of a chosen size, streamed to disk (bf16/fp16, shards).

For benchmarks that need gigabytes: tensors are drawn one at a time (N(0, 0.02), norms near
1) and written with the streaming safetensors writer, so memory holds one tensor. A
fine-tune is the same checkpoint with every tensor (``full``) or one layer's tensors
(``layer``) moved by a relative noise, as a fine-tune moves weights.
"""

from __future__ import annotations

import json
import math
import sys
import zlib
from pathlib import Path

import ml_dtypes
import numpy as np

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE / "examples"))

from trtcas.cas.atomic import atomic_write_bytes  # noqa: E402
from trtcas.rules.formats.safetensors import TensorSlot, dtype_code, write_streamed  # noqa: E402

from make_tiny_llama import hf_config, tensor_shapes  # noqa: E402

DTYPES = {"float16": np.dtype(np.float16), "bfloat16": np.dtype(ml_dtypes.bfloat16)}
# (min bytes, hidden, intermediate, heads, kv heads, vocab): TinyLlama's shape at ~2 GB
GEOMETRIES = [
    (1 << 30, 2048, 5632, 32, 4, 32000),
    (200 << 20, 1024, 2816, 16, 4, 16000),
    (30 << 20, 512, 1408, 8, 2, 8000),
    (0, 128, 352, 4, 2, 1024),
]


def sizes_for(target_bytes: int, itemsize: int = 2) -> dict:
    """HF sizes whose checkpoint is about ``target_bytes``: a geometry by size, then layers."""
    _, hidden, inter, heads, kv, vocab = next(g for g in GEOMETRIES if target_bytes >= g[0])
    sizes = {"hidden_size": hidden, "intermediate_size": inter, "num_attention_heads": heads,
             "num_key_value_heads": kv, "vocab_size": vocab, "num_hidden_layers": 1}
    fixed = model_bytes(sizes, itemsize) - layer_bytes(sizes, itemsize)
    sizes["num_hidden_layers"] = max(1, round((target_bytes - fixed) / layer_bytes(sizes, itemsize)))
    return sizes


def model_bytes(sizes: dict, itemsize: int = 2) -> int:
    return sum(math.prod(shape) for _, shape in tensor_shapes(sizes, False)) * itemsize


def layer_bytes(sizes: dict, itemsize: int = 2, layer: int = 0) -> int:
    prefix = f"model.layers.{layer}."
    return sum(math.prod(s) for n, s in tensor_shapes(sizes, False) if n.startswith(prefix)) * itemsize


def _draw(rng: np.random.Generator, name: str, shape: tuple[int, ...]) -> np.ndarray:
    values = rng.standard_normal(shape, dtype=np.float32)
    if name.endswith("norm.weight"):
        values = 1 + 0.1 * values
    else:
        values *= 0.02
    return values


def _tuned(name: str, values: np.ndarray, mode: str | None, noise: float, layer: int, seed: int) -> np.ndarray:
    if mode is None or (mode == "layer" and not name.startswith(f"model.layers.{layer}.")):
        return values
    rng = np.random.default_rng([seed, 7, zlib.crc32(name.encode())])
    return values * (1 + noise * rng.standard_normal(values.shape, dtype=np.float32))


def write_checkpoint(out_dir: Path, sizes: dict, dtype: str = "bfloat16", shards: int = 2, seed: int = 0,
                     finetune: str | None = None, noise: float = 1e-3, layer: int = 0) -> Path:
    """Write the HF checkpoint (``shards`` files + index + config.json); ``finetune``:
    None, ``full`` (every tensor moved by ``noise`` relative) or ``layer`` (layer ``layer``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    np_dtype = DTYPES[dtype]
    shapes = tensor_shapes(sizes, False)
    groups = np.array_split(np.arange(len(shapes)), shards)
    rng = np.random.default_rng(seed)
    weight_map = {}
    for number, group in enumerate(groups, 1):
        part = [shapes[i] for i in group]
        file_name = f"model-{number:05d}-of-{shards:05d}.safetensors"
        slots = [TensorSlot(name, dtype_code(np_dtype), shape) for name, shape in part]

        def chunks(part=part):
            for name, shape in part:
                values = _tuned(name, _draw(rng, name, shape), finetune, noise, layer, seed)
                yield name, (memoryview(values.astype(np_dtype).reshape(-1).view(np.uint8)),)

        write_streamed(out / file_name, slots, chunks())
        weight_map.update({name: file_name for name, _ in part})
    index = {"metadata": {"total_size": model_bytes(sizes, np_dtype.itemsize)}, "weight_map": weight_map}
    atomic_write_bytes(out / "model.safetensors.index.json", (json.dumps(index, indent=2) + "\n").encode())
    atomic_write_bytes(out / "config.json", (json.dumps(hf_config(dtype, sizes, False), indent=2) + "\n").encode())
    return out
