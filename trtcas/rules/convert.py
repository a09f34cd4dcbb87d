"""HF Llama-family checkpoint -> TensorRT-LLM checkpoint, with numpy and safetensors only.

The output follows TensorRT-LLM's checkpoint format (``docs/source/architecture/checkpoint.md``:
one ``config.json`` plus ``rank{N}.safetensors`` per rank) and the weight names and tensor
parallel splits of its LLaMA converter (``tensorrt_llm/models/llama/convert.py``,
``load_weights_from_hf_model`` / ``load_weights_from_hf_by_shard``, with the helpers in
``tensorrt_llm/models/convert_utils.py``). We reimplement it because TensorRT-LLM itself needs
torch and a GPU wheel, and because a build cache needs the conversion *per tensor*:

* A rank is planned as a tuple of :class:`ConvertStep`, each naming the few HF tensors it reads
  and the TRT-LLM tensors it yields. :func:`iter_rank_tensors` runs them one at a time, so a
  caller can put each converted tensor into a content-addressed store as it comes out, memory
  stays at one tensor (HF tensors are memory-mapped and sliced before they are converted), and
  a fine-tune that changed one layer's HF tensors changes only that layer's outputs.
* Conversion is pure: the same HF bytes and :class:`ConvertSpec` give the same bytes out, and
  the rank files we write have no timestamps and a fixed tensor order.

Conventions followed (and where they come from):

* q/k/v are each split by whole heads and concatenated per rank as ``[q_r; k_r; v_r]``
  (``split_qkv_tp`` / the GQA branch of ``convert_layer``). When ``tp > num_key_value_heads``
  each KV head is replicated ``tp / kv`` times before the split (``dup_kv_weight``), so rank r
  holds KV head ``r // (tp / kv)``.
* Column-parallel linears (qkv, ``mlp.fc``, ``mlp.gate``, ``lm_head``) split the output
  dimension (dim 0 of the ``[out, in]`` weight); row-parallel ones (``attention.dense``,
  ``mlp.proj``) split the input dimension (dim 1) (``split_matrix_tp``).
* ``mlp.fc`` is HF ``gate_proj`` and ``mlp.gate`` is HF ``up_proj``
  (``get_prefix_and_param_name_map``: ``"mlp.fc": "mlp.gate_proj"``, ``"mlp.gate": "mlp.up_proj"``).
  The names look swapped; they are TensorRT-LLM's and its GatedMLP applies the activation to fc.
* ``lm_head`` is zero-padded to a multiple of tp rows when tp does not divide the vocabulary
  (``pad_vocab_size``); ``config.json`` keeps the true ``vocab_size``. With
  ``tie_word_embeddings``, ``lm_head`` is a copy of ``embed_tokens`` (as TRT-LLM writes it).
* The vocabulary embedding is replicated unless ``vocab_parallel`` (TRT-LLM's
  ``use_parallel_embedding`` with ``embedding_sharding_dim`` 0), which splits its rows.
* Pipeline parallelism gives each pp rank a contiguous block of layers, renumbered from 0 in
  its file; the first pp rank holds the embedding, the last ``ln_f`` and ``lm_head``
  (``Mapping.pp_layers``, ``is_first_pp_rank`` / ``is_last_pp_rank``). Global rank is
  ``pp_rank * tp + tp_rank``.
* W8A16 (int8 weight-only) quantizes qkv, dense, fc, gate and proj, never the embedding or
  ``lm_head`` (TRT-LLM's default exclusions). Weights are cast to the target dtype first, then
  stored as int8 of shape ``[in, out]`` (the transpose TRT-LLM's ``WeightOnlyQuantLinear``
  declares) with ``per_channel_scale`` of shape ``[out]`` in the target dtype; the engine
  computes ``x @ (q * scale)``.
  Two deliberate differences from TRT-LLM's ``symmetric_quantize_last_axis_of_batched_matrix``:
  (1) it uses ``scale = amax / 128`` and clips, so each channel's largest weight is off by a
  full step; we use ``amax / 127`` and quantize against the scale as stored, so every weight is
  within half a step. (2) It then runs ``preprocess_weights_for_mixed_gemm``, an interleave that
  depends on the GPU of the machine running the converter (``getSMVersion``), for the
  ``WeightOnlyQuantMatmul`` plugin. We store the plain row-major int8 instead, which is what
  TRT-LLM's non-plugin path (``weight_only_quant_matmul`` without the plugin: dequantize along
  axis 1, then matmul) and a plain TensorRT dequantize layer consume. ``config.json`` records
  this as ``disable_weight_only_quant_plugin: true``. An engine rule that wants the plugin
  must do the SM-specific interleave itself, where the target SM is part of its key.
"""

from __future__ import annotations

import json
import mmap
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import ml_dtypes  # numpy's bfloat16; a dependency of onnx, which trtcas requires
import numpy as np

from trtcas.cas.atomic import atomic_write_bytes, fsync_dir, temp_path_beside
from trtcas.errors import TrtcasError
from trtcas.rules.formats.safetensors import read_layout as read_safetensors_layout

TARGET_DTYPES = ("float16", "bfloat16", "float32")
QUANT_ALGOS = (None, "W8A16")
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"

# safetensors dtype code <-> numpy dtype, for what we read and write.
DTYPE_OF_CODE = {"F16": np.dtype(np.float16), "F32": np.dtype(np.float32),
                  "BF16": np.dtype(ml_dtypes.bfloat16), "I8": np.dtype(np.int8)}
CODE_OF_DTYPE = {dtype: code for code, dtype in DTYPE_OF_CODE.items()}
_CODE_OF_TARGET = {"float16": "F16", "bfloat16": "BF16", "float32": "F32"}
FLOAT_CODES = ("F16", "BF16", "F32")

_REQUIRED_HF_KEYS = ("hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers",
                     "vocab_size", "rms_norm_eps", "max_position_embeddings")


class ConvertError(TrtcasError):
    """A checkpoint or conversion request that cannot be converted as asked."""


# --------------------------------------------------------------------------- the request


@dataclass(frozen=True)
class ConvertSpec:
    """What to convert to: parallelism, target dtype, quantization, embedding sharding.

    Every field changes the converted bytes, so all of them belong in a conversion's cache key.
    """

    tp: int = 1
    pp: int = 1
    dtype: str = "float16"
    quantization: str | None = None
    vocab_parallel: bool = False

    def __post_init__(self) -> None:
        for name in ("tp", "pp"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConvertError(f"{name} must be a positive integer, got {value!r}")
        if self.dtype not in TARGET_DTYPES:
            raise ConvertError(f"unknown dtype {self.dtype!r}; use one of {', '.join(TARGET_DTYPES)}")
        if self.quantization not in QUANT_ALGOS:
            raise ConvertError(f"unsupported quantization {self.quantization!r}; use none or W8A16")

    @property
    def world_size(self) -> int:
        return self.tp * self.pp


# --------------------------------------------------------------------------- the HF side


def read_hf_config(path: str | os.PathLike) -> dict:
    """Read and check a HF Llama ``config.json`` (``path`` is the file or its directory).

    Checked up front so a wrong or foreign config fails in one line before any tensor is read.
    """
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
    for key in _REQUIRED_HF_KEYS:
        if key not in config:
            raise ConvertError(f"{path}: HF config lacks {key!r}, which a LlamaForCausalLM config needs")
    for key in ("hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers", "vocab_size",
                "max_position_embeddings", "num_key_value_heads", "head_dim"):
        value = config.get(key, 1)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConvertError(f"{path}: HF config {key!r} must be a positive integer, got {value!r}")
    architectures = config.get("architectures") or ["LlamaForCausalLM"]
    if "LlamaForCausalLM" not in architectures:
        raise ConvertError(f"{path}: architectures {architectures} is not LlamaForCausalLM; only Llama is converted")
    if config.get("hidden_act", "silu") != "silu":
        raise ConvertError(f"{path}: hidden_act {config['hidden_act']!r} is not silu; Llama's gated MLP needs silu")
    for key in ("attention_bias", "mlp_bias"):
        if config.get(key):
            raise ConvertError(f"{path}: {key} is true; biases are not converted")
    source_dtype = config.get("torch_dtype", config.get("dtype"))
    if source_dtype is not None and source_dtype not in TARGET_DTYPES:
        raise ConvertError(f"{path}: unknown torch_dtype {source_dtype!r}; expected one of {', '.join(TARGET_DTYPES)}")
    return config


@dataclass(frozen=True)
class LlamaGeometry:
    """The sizes that decide every tensor's shape and split, read from a HF config."""

    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    layers: int
    vocab: int
    tied: bool

    @classmethod
    def from_hf(cls, config: Mapping) -> "LlamaGeometry":
        heads = config["num_attention_heads"]
        return cls(
            hidden=config["hidden_size"],
            intermediate=config["intermediate_size"],
            heads=heads,
            kv_heads=config.get("num_key_value_heads") or heads,
            head_dim=config.get("head_dim") or config["hidden_size"] // heads,
            layers=config["num_hidden_layers"],
            vocab=config["vocab_size"],
            tied=bool(config.get("tie_word_embeddings", False)),
        )


def check_parallelism(geometry: LlamaGeometry, spec: ConvertSpec) -> None:
    """Refuse splits TensorRT-LLM cannot make, before any tensor is read.

    Heads and the MLP are split in equal whole parts; KV heads are split when tp divides
    them and replicated when they divide tp (``dup_kv_weight``); anything else has no TRT-LLM
    layout.
    """
    g, tp = geometry, spec.tp
    if g.heads % g.kv_heads:
        raise ConvertError(f"num_attention_heads={g.heads} is not a multiple of num_key_value_heads={g.kv_heads}")
    if g.heads % tp:
        raise ConvertError(f"tp={tp} does not divide num_attention_heads={g.heads}")
    if g.kv_heads % tp and tp % g.kv_heads:
        raise ConvertError(
            f"tp={tp} neither divides num_key_value_heads={g.kv_heads} nor is a multiple of it; "
            "TensorRT-LLM can only split or replicate whole KV heads"
        )
    if g.intermediate % tp:
        raise ConvertError(f"tp={tp} does not divide intermediate_size={g.intermediate}")
    if spec.vocab_parallel and g.vocab % tp:
        raise ConvertError(f"tp={tp} does not divide vocab_size={g.vocab}; convert without vocab_parallel")
    if g.layers % spec.pp:
        raise ConvertError(f"pp={spec.pp} does not divide num_hidden_layers={g.layers}")


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
        try:
            weight_map = json.loads(index_path.read_text())["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConvertError(f"{index_path}: not a safetensors index with a weight_map ({exc})") from exc
        shard_names = sorted(set(weight_map.values()))
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
    with open(source.file, "rb") as stream:
        region = mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ)
    return np.frombuffer(region, stored, count, source.begin).reshape(source.shape)


def bf16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 is the top half of a float32, so widening is a 16-bit shift (exact)."""
    return (np.asarray(bits, np.uint16).astype(np.uint32) << 16).view(np.float32)


def _read(ckpt: HFCheckpoint, name: str, shape: tuple[int, ...], rows: slice = slice(None),
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


def rank_position(geometry: LlamaGeometry, spec: ConvertSpec, rank: int) -> RankPosition:
    """TensorRT-LLM's Mapping: ``tp_rank = rank % tp``, ``pp_rank = rank // tp``."""
    if not isinstance(rank, int) or not 0 <= rank < spec.world_size:
        raise ConvertError(f"rank {rank!r} is outside 0..{spec.world_size - 1} for tp={spec.tp} pp={spec.pp}")
    tp_rank, pp_rank = rank % spec.tp, rank // spec.tp
    per_stage = geometry.layers // spec.pp
    return RankPosition(rank, tp_rank, pp_rank, range(pp_rank * per_stage, (pp_rank + 1) * per_stage),
                        pp_rank == 0, pp_rank == spec.pp - 1)


@dataclass(frozen=True)
class TensorSlot:
    """A TRT-LLM tensor a step will yield: name, safetensors dtype code, shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]


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


def _linear_outputs(prefix: str, out_rows: int, in_cols: int, spec: ConvertSpec) -> tuple[TensorSlot, ...]:
    target = _CODE_OF_TARGET[spec.dtype]
    if spec.quantization == "W8A16":
        return (TensorSlot(f"{prefix}.weight", "I8", (in_cols, out_rows)),
                TensorSlot(f"{prefix}.per_channel_scale", target, (out_rows,)))
    return (TensorSlot(f"{prefix}.weight", target, (out_rows, in_cols)),)


def _layer_steps(g: LlamaGeometry, spec: ConvertSpec, hf_layer: int, local_layer: int) -> list[ConvertStep]:
    hf, out = f"model.layers.{hf_layer}", f"transformer.layers.{local_layer}"
    tp, target = spec.tp, _CODE_OF_TARGET[spec.dtype]
    q_rows, kv_rows = g.heads * g.head_dim, g.kv_heads * g.head_dim
    qkv_local = (g.heads // tp + 2 * len(kv_heads_of_rank(g.kv_heads, tp, 0))) * g.head_dim
    norm = (g.hidden,)
    return [
        ConvertStep("replicate", (f"{hf}.input_layernorm.weight",), (norm,),
                    (TensorSlot(f"{out}.input_layernorm.weight", target, norm),)),
        ConvertStep("qkv", tuple(f"{hf}.self_attn.{p}_proj.weight" for p in "qkv"),
                    ((q_rows, g.hidden), (kv_rows, g.hidden), (kv_rows, g.hidden)),
                    _linear_outputs(f"{out}.attention.qkv", qkv_local, g.hidden, spec)),
        ConvertStep("row", (f"{hf}.self_attn.o_proj.weight",), ((g.hidden, q_rows),),
                    _linear_outputs(f"{out}.attention.dense", g.hidden, q_rows // tp, spec)),
        ConvertStep("replicate", (f"{hf}.post_attention_layernorm.weight",), (norm,),
                    (TensorSlot(f"{out}.post_layernorm.weight", target, norm),)),
        ConvertStep("column", (f"{hf}.mlp.gate_proj.weight",), ((g.intermediate, g.hidden),),
                    _linear_outputs(f"{out}.mlp.fc", g.intermediate // tp, g.hidden, spec)),
        ConvertStep("column", (f"{hf}.mlp.up_proj.weight",), ((g.intermediate, g.hidden),),
                    _linear_outputs(f"{out}.mlp.gate", g.intermediate // tp, g.hidden, spec)),
        ConvertStep("row", (f"{hf}.mlp.down_proj.weight",), ((g.hidden, g.intermediate),),
                    _linear_outputs(f"{out}.mlp.proj", g.hidden, g.intermediate // tp, spec)),
    ]


def _padded_vocab(vocab: int, tp: int) -> int:
    """TensorRT-LLM's ``pad_vocab_size``: round up to a multiple of tp."""
    return -(-vocab // tp) * tp


def plan_rank(hf_config: Mapping, spec: ConvertSpec, rank: int) -> tuple[ConvertStep, ...]:
    """The steps that make ``rank{rank}.safetensors``, in file order; reads no tensor.

    With ``tie_word_embeddings`` the lm_head is read from ``embed_tokens`` whether or not the
    file also has an ``lm_head.weight``, as transformers ties them on load.
    """
    g = LlamaGeometry.from_hf(hf_config)
    check_parallelism(g, spec)
    pos = rank_position(g, spec, rank)
    target = _CODE_OF_TARGET[spec.dtype]
    table = (g.vocab, g.hidden)
    steps: list[ConvertStep] = []
    if pos.first_stage:
        rows = g.vocab // spec.tp if spec.vocab_parallel else g.vocab
        steps.append(ConvertStep("embedding", ("model.embed_tokens.weight",), (table,),
                                 (TensorSlot("transformer.vocab_embedding.weight", target, (rows, g.hidden)),)))
    for local, hf_layer in enumerate(pos.layers):
        steps.extend(_layer_steps(g, spec, hf_layer, local))
    if pos.last_stage:
        steps.append(ConvertStep("replicate", ("model.norm.weight",), ((g.hidden,),),
                                 (TensorSlot("transformer.ln_f.weight", target, (g.hidden,)),)))
        head_source = "model.embed_tokens.weight" if g.tied else "lm_head.weight"
        head_rows = _padded_vocab(g.vocab, spec.tp) // spec.tp
        steps.append(ConvertStep("lm_head", (head_source,), (table,),
                                 (TensorSlot("lm_head.weight", target, (head_rows, g.hidden)),)))
    return tuple(steps)


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


def _heads(range_: range, head_dim: int) -> slice:
    return slice(range_.start * head_dim, range_.stop * head_dim)


def _fused_qkv(ckpt: HFCheckpoint, g: LlamaGeometry, spec: ConvertSpec, tp_rank: int,
               step: ConvertStep) -> np.ndarray:
    """``[q_r; k_r; v_r]``: this rank's query heads, then its (possibly replicated) KV heads."""
    (q_name, k_name, v_name), (q_shape, k_shape, v_shape) = step.sources, step.source_shapes
    per_rank = g.heads // spec.tp
    q_rows = _heads(range(tp_rank * per_rank, (tp_rank + 1) * per_rank), g.head_dim)
    kv_rows = _heads(kv_heads_of_rank(g.kv_heads, spec.tp, tp_rank), g.head_dim)
    return np.concatenate([
        _read(ckpt, q_name, q_shape, rows=q_rows),
        _read(ckpt, k_name, k_shape, rows=kv_rows),
        _read(ckpt, v_name, v_shape, rows=kv_rows),
    ])


def _lm_head(ckpt: HFCheckpoint, spec: ConvertSpec, tp_rank: int, step: ConvertStep) -> np.ndarray:
    """This rank's rows of the vocabulary, zero rows past its end (``pad_vocab_size``)."""
    (name,), ((vocab, hidden),) = step.sources, step.source_shapes
    rows = _padded_vocab(vocab, spec.tp) // spec.tp
    start = tp_rank * rows
    values = _read(ckpt, name, (vocab, hidden), rows=slice(start, min(start + rows, vocab)))
    missing = rows - values.shape[0]
    return np.concatenate([values, np.zeros((missing, hidden), values.dtype)]) if missing else values


def _step_values(ckpt: HFCheckpoint, g: LlamaGeometry, spec: ConvertSpec, pos: RankPosition,
                 step: ConvertStep) -> np.ndarray:
    """The values of a step's (unquantized) output in the HF dtype, read and split for this rank."""
    tp, r = spec.tp, pos.tp_rank
    (name, *_), (shape, *_) = step.sources, step.source_shapes
    if step.op == "qkv":
        return _fused_qkv(ckpt, g, spec, r, step)
    if step.op == "lm_head":
        return _lm_head(ckpt, spec, r, step)
    if step.op == "replicate" or (step.op == "embedding" and not spec.vocab_parallel):
        return _read(ckpt, name, shape)
    if step.op in ("column", "embedding"):
        size = shape[0] // tp
        return _read(ckpt, name, shape, rows=slice(r * size, (r + 1) * size))
    if step.op == "row":
        size = shape[1] // tp
        return _read(ckpt, name, shape, cols=slice(r * size, (r + 1) * size))
    raise AssertionError(f"unknown step op {step.op!r}")


def run_step(ckpt: HFCheckpoint, hf_config: Mapping, spec: ConvertSpec, rank: int,
             step: ConvertStep) -> Iterator[tuple[str, np.ndarray]]:
    """Run one planned step: its (name, array) outputs, checked against the plan."""
    g = LlamaGeometry.from_hf(hf_config)
    pos = rank_position(g, spec, rank)
    values = _step_values(ckpt, g, spec, pos, step)
    if step.outputs[0].dtype == "I8":
        arrays = quantize_int8_per_channel(values, spec.dtype)
    else:
        arrays = (cast_to(values, spec.dtype),)
    for planned, array in zip(step.outputs, arrays, strict=True):
        produced = TensorSlot(planned.name, CODE_OF_DTYPE[array.dtype], tuple(array.shape))
        if produced != planned:
            raise AssertionError(f"conversion produced {produced}, planned {planned}")
        yield planned.name, array


# --------------------------------------------------------------------------- public conversion


def _rank_tensors(ckpt: HFCheckpoint, hf_config: Mapping, spec: ConvertSpec,
                  steps: Iterable[ConvertStep], rank: int) -> Iterator[tuple[str, np.ndarray]]:
    for step in steps:
        yield from run_step(ckpt, hf_config, spec, rank, step)


def iter_rank_tensors(hf_dir: str | os.PathLike, spec: ConvertSpec, rank: int) -> Iterator[tuple[str, np.ndarray]]:
    """Rank ``rank``'s TRT-LLM tensors one at a time, in file order.

    Everything that can be checked without tensor data (config, splits, files, truncation)
    is checked before the first tensor is yielded.
    """
    hf_config = read_hf_config(hf_dir)
    steps = plan_rank(hf_config, spec, rank)
    ckpt = open_hf_checkpoint(hf_dir)
    return _rank_tensors(ckpt, hf_config, spec, steps, rank)


def convert_rank(hf_dir: str | os.PathLike, spec: ConvertSpec, rank: int) -> dict[str, np.ndarray]:
    """All of rank ``rank``'s TRT-LLM tensors by name (deterministic; holds one rank in memory)."""
    return dict(iter_rank_tensors(hf_dir, spec, rank))


def trtllm_config(hf_config: Mapping, spec: ConvertSpec) -> dict:
    """The checkpoint's ``config.json``: TRT-LLM's ``PretrainedConfig`` plus ``LLaMAConfig`` fields.

    Field names and values follow ``LLaMAConfig.from_hugging_face`` (``rope_gpt_neox``,
    ``rotary_base`` from ``rope_theta``, ``rotary_scaling`` from ``rope_scaling``, ``head_size``);
    ``mapping`` carries only world/tp/pp sizes, which every TRT-LLM version's ``Mapping`` accepts.
    """
    g = LlamaGeometry.from_hf(hf_config)
    check_parallelism(g, spec)
    return {
        "architecture": "LlamaForCausalLM",
        "dtype": spec.dtype,
        "logits_dtype": "float32",
        "vocab_size": g.vocab,
        "max_position_embeddings": hf_config["max_position_embeddings"],
        "hidden_size": g.hidden,
        "num_hidden_layers": g.layers,
        "num_attention_heads": g.heads,
        "num_key_value_heads": g.kv_heads,
        "head_size": g.head_dim,
        "hidden_act": "silu",
        "intermediate_size": g.intermediate,
        "norm_epsilon": hf_config["rms_norm_eps"],
        "position_embedding_type": "rope_gpt_neox",
        "rotary_base": hf_config.get("rope_theta", 10000.0),
        "rotary_scaling": hf_config.get("rope_scaling"),
        "use_parallel_embedding": spec.vocab_parallel,
        "embedding_sharding_dim": 0,
        "tie_word_embeddings": g.tied,
        "mlp_bias": False,
        "attn_bias": False,
        "disable_weight_only_quant_plugin": spec.quantization == "W8A16",
        "mapping": {"world_size": spec.world_size, "tp_size": spec.tp, "pp_size": spec.pp},
        "quantization": {"quant_algo": spec.quantization, "kv_cache_quant_algo": None},
    }


# --------------------------------------------------------------------------- safetensors out


def safetensors_header(outputs: Iterable[TensorSlot], metadata: Mapping[str, str] | None = None) -> bytes:
    """The length-prefixed JSON header for tensors laid out back to back in the given order.

    Padded with spaces to a multiple of 8 bytes, as the format allows, so the data is aligned.
    """
    header: dict = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for out in outputs:
        size = int(np.prod(out.shape, dtype=np.int64)) * DTYPE_OF_CODE[out.dtype].itemsize
        header[out.name] = {"dtype": out.dtype, "shape": list(out.shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text


def encode_safetensors(tensors: Iterable[tuple[str, np.ndarray]], metadata: Mapping[str, str] | None = None) -> bytes:
    """Small in-memory tensors -> safetensors bytes (numpy's safetensors API cannot write bf16)."""
    items = [(name, np.ascontiguousarray(array)) for name, array in tensors]
    outputs = [TensorSlot(name, CODE_OF_DTYPE[array.dtype], tuple(array.shape)) for name, array in items]
    return safetensors_header(outputs, metadata) + b"".join(array.tobytes() for _, array in items)


def _write_streamed(path: Path, outputs: tuple[TensorSlot, ...], tensors: Iterator[tuple[str, np.ndarray]]) -> None:
    """Write a safetensors file whose layout is known in advance, one tensor at a time, atomically.

    The same protocol as ``atomic_write_bytes`` (temp beside the target, fsync, rename, fsync
    the directory) without holding the file in memory.
    """
    temp = temp_path_beside(path)
    try:
        with open(temp, "wb") as out:
            out.write(safetensors_header(outputs, {"format": "pt"}))
            for planned, (name, array) in zip(outputs, tensors, strict=True):
                assert name == planned.name, (name, planned.name)
                out.write(np.ascontiguousarray(array).reshape(-1).view(np.uint8).data)  # bf16 has no buffer format
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_checkpoint(hf_dir: str | os.PathLike, spec: ConvertSpec, out_dir: str | os.PathLike) -> list[Path]:
    """Write a TRT-LLM checkpoint: ``rank{r}.safetensors`` for every rank, then ``config.json``.

    Every file appears whole or not at all; ``config.json`` is written last so a directory with
    a fresh one has all its ranks. Returns the paths written.
    """
    hf_config = read_hf_config(hf_dir)
    plans = [plan_rank(hf_config, spec, rank) for rank in range(spec.world_size)]
    ckpt = open_hf_checkpoint(hf_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for rank, steps in enumerate(plans):
        path = out / f"rank{rank}.safetensors"
        outputs = tuple(o for step in steps for o in step.outputs)
        _write_streamed(path, outputs, _rank_tensors(ckpt, hf_config, spec, steps, rank))
        written.append(path)
    config_path = out / "config.json"
    atomic_write_bytes(config_path, (json.dumps(trtllm_config(hf_config, spec), indent=2) + "\n").encode())
    written.append(config_path)
    return written
