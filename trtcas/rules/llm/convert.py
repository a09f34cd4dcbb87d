"""CONVERTDOC"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from trtcas.cas.atomic import atomic_write_bytes
from trtcas.rules.formats.safetensors import DTYPE_OF_CODE, TensorSlot, write_arrays
from trtcas.rules.llm.architectures import Architecture, architecture
from trtcas.rules.llm.hf import (
    HFCheckpoint,
    hf_architecture,
    open_hf_checkpoint,
    read_hf_config,
)
from trtcas.rules.llm.spec import _CODE_OF_TARGET, ConvertError, ConvertSpec

# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class RankPosition:
    """Where a global rank sits: its tp and pp coordinates and the HF layers it holds."""

    rank: int
    tp_rank: int
    pp_rank: int
    layers: range
    first_stage: bool
    last_stage: bool


def rank_position(geometry: Any, spec: ConvertSpec, rank: int) -> RankPosition:
    """TensorRT-LLM's Mapping: ``tp_rank = rank % tp``, ``pp_rank = rank // tp``."""
    if not isinstance(rank, int) or not 0 <= rank < spec.world_size:
        raise ConvertError(f"rank {rank!r} is outside 0..{spec.world_size - 1} for tp={spec.tp} pp={spec.pp}")
    tp_rank, pp_rank = rank % spec.tp, rank // spec.tp
    per_stage = geometry.layers // spec.pp
    return RankPosition(rank, tp_rank, pp_rank, range(pp_rank * per_stage, (pp_rank + 1) * per_stage),
                        pp_rank == 0, pp_rank == spec.pp - 1)


@dataclass(frozen=True)
class ConvertStep:
    """One unit of conversion: read ``sources`` (HF names), apply ``op``, yield ``outputs``.

    ``op`` is one of ``replicate`` (norms), ``qkv``, ``column`` (split dim 0), ``row`` (split
    dim 1), ``embedding`` and ``lm_head``. The sources (with the shapes the config implies for
    them) are declared so a cache can key a step by the digests of exactly the HF tensors it
    reads, together with the spec and the rank.
    """

    op: str
    sources: tuple[str, ...]
    source_shapes: tuple[tuple[int, ...], ...]
    outputs: tuple[TensorSlot, ...]


def padded_vocab(vocab: int, tp: int) -> int:
    """TensorRT-LLM's ``pad_vocab_size``: round up to a multiple of tp."""
    return -(-vocab // tp) * tp


# --------------------------------------------------------------------------- the math


def cast_to(values: np.ndarray, dtype: str) -> np.ndarray:
    """Round float values to the target dtype (round-to-nearest-even, as torch's ``.to``);
    no copy beyond making it contiguous when it already has that dtype."""
    target = DTYPE_OF_CODE[_CODE_OF_TARGET[dtype]]
    if values.dtype == target:
        return np.ascontiguousarray(values)
    if values.dtype != np.float32:  # widen exactly first, so every path rounds once from float32
        values = values.astype(np.float32)
    return np.ascontiguousarray(values.astype(target))


def _round_half_away(x: np.ndarray) -> np.ndarray:
    """C's ``round``, which TRT-LLM's quantizer uses (numpy's ``rint`` rounds ties to even)."""
    rounded = np.rint(x)
    truncated = np.trunc(x)
    ties = np.abs(x - truncated) == 0.5
    rounded[ties] = (truncated + np.sign(x))[ties]
    return rounded


def quantize_int8_per_channel(weight: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-output-channel int8 of an ``[out, in]`` weight -> (``[in, out]`` int8, ``[out]`` scale).

    The weight is first rounded to ``dtype`` (TRT-LLM quantizes the cast weight), the scale is
    ``amax / 127`` rounded to ``dtype``, and values are quantized against that stored scale, so
    ``q * scale`` is within half a scale step of the cast weight. A channel of zeros gets scale 0
    and zeros, as in TRT-LLM.
    """
    columns = cast_to(weight, dtype).astype(np.float32).T  # [in, out]
    scale = cast_to(np.abs(columns).max(axis=0) / np.float32(127.0), dtype)
    scale32 = scale.astype(np.float32)
    steps = np.divide(columns, scale32, out=np.zeros_like(columns), where=scale32 > 0)
    quantized = np.clip(_round_half_away(steps), -128, 127).astype(np.int8)
    return np.ascontiguousarray(quantized), scale


def kv_heads_of_rank(kv_heads: int, tp: int, tp_rank: int) -> range:
    """The HF KV heads a rank holds: its share when tp divides them, else one replicated head."""
    if kv_heads >= tp:
        per_rank = kv_heads // tp
        return range(tp_rank * per_rank, (tp_rank + 1) * per_rank)
    head = tp_rank // (tp // kv_heads)
    return range(head, head + 1)


def head_slice(range_: range, head_dim: int) -> slice:
    return slice(range_.start * head_dim, range_.stop * head_dim)


# --------------------------------------------------------------------------- public conversion


def _rank_tensors(arch: Architecture, ckpt: HFCheckpoint, hf_config: Mapping, spec: ConvertSpec,
                  steps: Iterable[ConvertStep], rank: int) -> Iterator[tuple[str, np.ndarray]]:
    for step in steps:
        yield from arch.run_step(ckpt, hf_config, spec, rank, step)


def _open(hf_dir: str | os.PathLike) -> tuple[Architecture, dict]:
    hf_config = read_hf_config(hf_dir)
    return architecture(hf_architecture(hf_config)), hf_config


def plan_rank(hf_config: Mapping, spec: ConvertSpec, rank: int) -> tuple[ConvertStep, ...]:
    """The steps that make ``rank{rank}.safetensors``, in file order; reads no tensor."""
    return architecture(hf_architecture(hf_config)).plan_rank(hf_config, spec, rank)


def trtllm_config(hf_config: Mapping, spec: ConvertSpec) -> dict:
    """The TensorRT-LLM checkpoint's ``config.json`` for ``hf_config`` converted as ``spec`` asks."""
    return architecture(hf_architecture(hf_config)).trtllm_config(hf_config, spec)


def open_rank(hf_dir: str | os.PathLike, spec: ConvertSpec, rank: int
              ) -> tuple[tuple[TensorSlot, ...], Iterator[tuple[str, np.ndarray]]]:
    """Rank ``rank``'s tensors as planned (their slots, in file order) and as computed, one
    at a time in that order.

    Everything that can be checked without tensor data (config, splits, files, truncation)
    is checked before this returns.
    """
    arch, hf_config = _open(hf_dir)
    steps = arch.plan_rank(hf_config, spec, rank)
    ckpt = open_hf_checkpoint(hf_dir)
    return _slots(steps), _rank_tensors(arch, ckpt, hf_config, spec, steps, rank)


def iter_rank_tensors(hf_dir: str | os.PathLike, spec: ConvertSpec, rank: int) -> Iterator[tuple[str, np.ndarray]]:
    """Rank ``rank``'s TRT-LLM tensors one at a time, in file order (see ``open_rank``)."""
    return open_rank(hf_dir, spec, rank)[1]


def _slots(steps: Iterable[ConvertStep]) -> tuple[TensorSlot, ...]:
    return tuple(slot for step in steps for slot in step.outputs)


def convert_rank(hf_dir: str | os.PathLike, spec: ConvertSpec, rank: int) -> dict[str, np.ndarray]:
    """All of rank ``rank``'s TRT-LLM tensors by name (deterministic; holds one rank in memory)."""
    return dict(iter_rank_tensors(hf_dir, spec, rank))


def write_checkpoint(hf_dir: str | os.PathLike, spec: ConvertSpec, out_dir: str | os.PathLike) -> list[Path]:
    """Write a TRT-LLM checkpoint: ``rank{r}.safetensors`` for every rank, then ``config.json``.

    Every file appears whole or not at all; ``config.json`` is written last so a directory with
    a fresh one has all its ranks. Returns the paths written.
    """
    arch, hf_config = _open(hf_dir)
    plans = [arch.plan_rank(hf_config, spec, rank) for rank in range(spec.world_size)]
    ckpt = open_hf_checkpoint(hf_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for rank, steps in enumerate(plans):
        path = out / f"rank{rank}.safetensors"
        write_arrays(path, _slots(steps), _rank_tensors(arch, ckpt, hf_config, spec, steps, rank))
        written.append(path)
    config_path = out / "config.json"
    atomic_write_bytes(config_path, (json.dumps(arch.trtllm_config(hf_config, spec), indent=2) + "\n").encode())
    written.append(config_path)
    return written
