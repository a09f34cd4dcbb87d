"""A TensorRT-LLM checkpoint rank -> a TensorRT network made of TensorRT's own layers.

The cache shares one engine build among tensor-parallel ranks whose networks are
structurally identical, and refits it with each rank's weights. That only works if the
rank lives in the weights alone, so the network built here is the same for every rank of
a checkpoint: the same layers, attributes and shapes, with the rank's shard of every
tensor entering as a constant named by its TensorRT-LLM weight name (so
``Refitter.set_named_weights`` finds it on a GPU). The one per-rank value that is not a
checkpoint tensor, the first vocabulary row of a vocab-parallel embedding, is a named
constant too (:data:`VOCAB_START`), not an attribute. Whether two ranks really are
identical is decided by their structural digests (``canonical.py``), not assumed here.

TensorRT-LLM's own network builder (``LLaMAForCausalLM`` + ``trtllm-build``) cannot be
installed on these machines and its TensorRT backend left its main branch in 2026, so only
the native path exists: ``IAttention``, ``IRotaryEmbeddingLayer``, ``IDistCollectiveLayer``
and plain layers, which full TensorRT and TensorRT-RTX share.

The network is the context (prefill) phase of a Llama decoder, without a KV cache:
``input_ids [batch, seq] int32 -> logits [batch, seq, vocab]``. Choices and why:

- RMSNorm is built from reduce/elementwise/unary layers in float32, not from
  ``add_normalization``: ``INormalizationLayer`` computes ``(x - mean) / sqrt(var + eps)``
  (LayerNorm) and has no RMS mode, and Llama's RMSNorm subtracts no mean. As in HF, the
  normalized value is cast back to the model dtype before the weight multiplies it.
- ``IAttention`` does not scale ``Q Kᵀ``: TensorRT requires Q to be multiplied by the
  attention scale first, so Q is multiplied by ``1/sqrt(head_size)`` after RoPE.
- Attention is marked decomposable by default: TensorRT has fused kernels only for some
  head sizes and dtypes (the tiny test model's head size 8 has none, and the build fails
  with "Attention operation was not supported by a dedicated kernel"); decomposable lets it
  fall back to two matmuls and a softmax there and changes nothing where a fused kernel
  exists. ``decomposable_attention=False`` makes such a build fail instead of run slowly.
- The causal mask is ``UPPER_LEFT`` (``j <= i``); in prefill ``seq_q == seq_kv``, where it
  equals ``LOWER_RIGHT``.
- RoPE caches are ``[batch, seq, head_size/2]`` (no position ids), sliced at build/run time
  from a ``[1, max_seq_len, head_size/2]`` table (``WRAP`` repeats row 0 over the batch),
  because the layer requires the caches' batch to equal the input's.
- With ``tp > 1`` the row-parallel outputs (attention dense, mlp proj, a vocab-parallel
  embedding) are summed by an ``ALL_REDUCE`` collective over the group ``[0 .. tp-1]`` (the
  same list on every rank). The lm_head is column-parallel; by default its logits are
  all-gathered (as TensorRT-LLM's ``lm_head`` with ``gather_output=True``), so every rank
  outputs ``[batch, seq, vocab]``; ``gather_logits=False`` leaves each rank its shard
  ``[batch, seq, padded_vocab / tp]``.
- Pipeline parallelism (``pp_size > 1``) is refused: a middle stage has no embedding and no
  lm_head and exchanges hidden states, which this builder does not model.

Building an engine from the network goes through ``engine.build_plan``;
:func:`build_decoder_engine` adds one thing: a failed build names the layer that failed,
from the build log or, when the log names none, by compiling each layer type of the network
alone (:func:`probe_layer_support`).

TensorRT is never imported here: the backend's module is used.
"""
from __future__ import annotations

import json
import math
import mmap
import os
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import ml_dtypes
import numpy as np

from trtcas.cas.digest import read_safetensors_layout
from trtcas.errors import TrtcasError
from trtcas.rules.backend import Backend, tidy_message
from trtcas.rules.engine import EnginePlan, EngineSpec, build_plan, resolved_targets
from trtcas.rules.network import ParsedNetwork, Profile

CONFIG_FILE = "config.json"
INPUT_NAME = "input_ids"
OUTPUT_NAME = "logits"
# The first vocabulary row a vocab-parallel rank holds: a per-rank int32 constant [1, 1].
VOCAB_START = "transformer.vocab_embedding.vocab_start"

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM",)
_FLOAT_DTYPES = ("float16", "bfloat16", "float32")
_NUMPY_DTYPE = {"float16": np.dtype(np.float16), "bfloat16": np.dtype(ml_dtypes.bfloat16),
                "float32": np.dtype(np.float32)}
_TRT_DTYPE = {"float16": "HALF", "bfloat16": "BF16", "float32": "FLOAT"}
_SAFETENSORS_DTYPE = {"F16": _NUMPY_DTYPE["float16"], "BF16": _NUMPY_DTYPE["bfloat16"],
                      "F32": _NUMPY_DTYPE["float32"], "I8": np.dtype(np.int8),
                      "I32": np.dtype(np.int32), "I64": np.dtype(np.int64)}
_REQUIRED_KEYS = ("architecture", "dtype", "vocab_size", "hidden_size", "num_hidden_layers",
                  "num_attention_heads")


# --------------------------------------------------------------------------- the checkpoint


@dataclass(frozen=True)
class TrtllmCheckpoint:
    """A TensorRT-LLM checkpoint directory: its parsed ``config.json`` and one file per rank.

    Reading it checks that the files agree with the config's ``mapping`` (every rank's file
    exists, and none beyond ``world_size``), so a checkpoint converted for another tp fails
    here in one line rather than as a shape error deep in a network build.
    """

    directory: Path
    config: Mapping[str, Any]
    rank_files: tuple[Path, ...]

    @property
    def tp_size(self) -> int:
        return _mapping(self.config)[1]

    @property
    def pp_size(self) -> int:
        return _mapping(self.config)[2]

    @property
    def world_size(self) -> int:
        return _mapping(self.config)[0]


def read_trtllm_checkpoint(directory: str | os.PathLike) -> TrtllmCheckpoint:
    """Read ``config.json`` and locate ``rank{N}.safetensors`` for every rank of ``directory``."""
    root = Path(directory)
    if not root.is_dir():
        raise TrtcasError(f"TensorRT-LLM checkpoint directory {root} not found; point the target at the "
                          "directory holding config.json and rank*.safetensors")
    path = root / CONFIG_FILE
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise TrtcasError(f"{root} has no {CONFIG_FILE}; it is not a TensorRT-LLM checkpoint "
                          "(convert the HF model first)") from None
    except ValueError as exc:
        raise TrtcasError(f"{path} is not valid JSON ({exc}); re-run the conversion") from None
    except OSError as exc:
        raise TrtcasError(f"cannot read {path}: {exc.strerror or exc}; fix its permissions") from None
    if not isinstance(config, dict):
        raise TrtcasError(f"{path} is not a JSON object; re-run the conversion")
    missing = [key for key in _REQUIRED_KEYS if key not in config]
    if missing:
        raise TrtcasError(f"{path} lacks {', '.join(map(repr, missing))}; it is not a TensorRT-LLM "
                          "checkpoint config (re-run the conversion)")
    world, tp, pp = _mapping(config, path)
    files = tuple(root / f"rank{rank}.safetensors" for rank in range(world))
    absent = [f.name for f in files if not f.is_file()]
    if absent:
        raise TrtcasError(f"{root} lacks {', '.join(absent)}, which {CONFIG_FILE}'s mapping "
                          f"(world_size={world}, tp_size={tp}, pp_size={pp}) needs; the conversion did not finish")
    extra = sorted((p.name for p in root.glob("rank*.safetensors")
                    if re.fullmatch(r"rank(\d+)\.safetensors", p.name)
                    and int(p.name[4:-12]) >= world), key=lambda n: int(n[4:-12]))
    if extra:
        raise TrtcasError(f"{root} has {', '.join(extra)} but {CONFIG_FILE}'s mapping says world_size={world} "
                          f"(tp_size={tp}, pp_size={pp}); the rank files and the config disagree, re-convert "
                          "into an empty directory")
    return TrtllmCheckpoint(root, config, files)


def _mapping(config: Mapping[str, Any], where: Any = CONFIG_FILE) -> tuple[int, int, int]:
    """(world_size, tp_size, pp_size); a missing ``mapping`` is TensorRT-LLM's default (1, 1, 1)."""
    mapping = config.get("mapping") or {}
    if not isinstance(mapping, Mapping):
        raise TrtcasError(f"{where}: mapping must be an object like {{\"tp_size\": 2}}, got {mapping!r}")
    sizes = {}
    for key in ("tp_size", "pp_size", "world_size"):
        value = mapping.get(key, 1 if key != "world_size" else None)
        if value is None:
            value = sizes["tp_size"] * sizes["pp_size"]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise TrtcasError(f"{where}: mapping.{key} must be a positive integer, got {value!r}")
        sizes[key] = value
    if sizes["world_size"] != sizes["tp_size"] * sizes["pp_size"]:
        raise TrtcasError(f"{where}: mapping.world_size={sizes['world_size']} is not tp_size*pp_size="
                          f"{sizes['tp_size']}*{sizes['pp_size']}; fix the mapping or re-convert")
    return sizes["world_size"], sizes["tp_size"], sizes["pp_size"]


def read_rank_weights(checkpoint: TrtllmCheckpoint, rank: int) -> dict[str, np.ndarray]:
    """Rank ``rank``'s tensors by name, memory-mapped (read-only; nothing is copied).

    bfloat16 comes back typed ``ml_dtypes.bfloat16``. The arrays keep the map open, so a
    network built from them can use them for as long as it lives.
    """
    if not isinstance(rank, int) or not 0 <= rank < checkpoint.world_size:
        raise TrtcasError(f"rank {rank!r} is outside 0..{checkpoint.world_size - 1} of {checkpoint.directory}")
    path = checkpoint.rank_files[rank]
    layout = read_safetensors_layout(path)
    with open(path, "rb") as stream:
        region = mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ)
    weights = {}
    for name, (code, shape, begin, end) in layout.tensors.items():
        dtype = _SAFETENSORS_DTYPE.get(code)
        if dtype is None:
            raise TrtcasError(f"{path}: tensor {name!r} has dtype {code}, which no Llama network layer takes")
        count = math.prod(shape)
        if count * dtype.itemsize != end - begin:
            raise TrtcasError(f"{path}: tensor {name!r} byte size disagrees with its shape {list(shape)}; re-convert")
        weights[name] = np.frombuffer(region, dtype, count, begin).reshape(shape)
    return weights


# --------------------------------------------------------------------------- the geometry


@dataclass(frozen=True)
class DecoderGeometry:
    """The sizes and choices a checkpoint's ``config.json`` fixes, per rank where split.

    Nothing here depends on the rank: every rank of a checkpoint has the same geometry,
    which is what lets their networks be identical.
    """

    dtype: str
    logits_dtype: str
    vocab: int
    padded_vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_size: int
    tp: int
    vocab_parallel: bool
    norm_epsilon: float
    rotary_base: float
    rotary_scaling: tuple[tuple[str, Any], ...] | None
    quantization: str | None

    @property
    def heads_per_rank(self) -> int:
        return self.heads // self.tp

    @property
    def kv_heads_per_rank(self) -> int:
        """Split when tp divides the KV heads, else one (replicated) KV head per rank."""
        return max(self.kv_heads // self.tp, 1)

    @property
    def qkv_rows(self) -> int:
        return (self.heads_per_rank + 2 * self.kv_heads_per_rank) * self.head_size

    @property
    def embedding_rows(self) -> int:
        return self.vocab // self.tp if self.vocab_parallel else self.vocab

    @property
    def lm_head_rows(self) -> int:
        return self.padded_vocab // self.tp

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "DecoderGeometry":
        """Check a TRT-LLM Llama config for what this builder supports; one line per problem."""
        for key in _REQUIRED_KEYS:
            if key not in config:
                raise TrtcasError(f"TensorRT-LLM config lacks {key!r}; re-run the conversion")
        arch = config["architecture"]
        _check(arch in SUPPORTED_ARCHITECTURES,
               f"architecture {arch!r} has no native network here; supported: {', '.join(SUPPORTED_ARCHITECTURES)}")
        _, tp, pp = _mapping(config)
        _check(pp == 1, f"pp_size={pp}: pipeline-parallel checkpoints are not supported by the native decoder "
                        "network; convert with pp=1")
        dtype, logits_dtype = config["dtype"], config.get("logits_dtype", "float32")
        for key, value in (("dtype", dtype), ("logits_dtype", logits_dtype)):
            _check(value in _FLOAT_DTYPES, f"{key} {value!r} is not one of {', '.join(_FLOAT_DTYPES)}")
        sizes = {key: config.get(key) for key in ("vocab_size", "hidden_size", "num_hidden_layers",
                                                   "num_attention_heads", "intermediate_size")}
        sizes["num_key_value_heads"] = config.get("num_key_value_heads") or sizes["num_attention_heads"]
        for key, value in sizes.items():
            _check(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                   f"config {key} must be a positive integer, got {value!r}")
        heads, kv_heads = sizes["num_attention_heads"], sizes["num_key_value_heads"]
        head_size = config.get("head_size") or sizes["hidden_size"] // heads
        _check(isinstance(head_size, int) and head_size >= 2 and head_size % 2 == 0,
               f"head_size {head_size!r} must be an even positive integer (RoPE rotates pairs)")
        for key, expected in (("hidden_act", "silu"), ("position_embedding_type", "rope_gpt_neox")):
            value = config.get(key, expected)
            _check(value == expected, f"{key} {value!r} is not supported; the Llama network needs {expected!r}")
        for key in ("mlp_bias", "attn_bias", "bias"):
            _check(not config.get(key), f"{key} is true; biases are not part of the native Llama network")
        quant = config.get("quantization") or {}
        algo = quant.get("quant_algo")
        _check(algo in (None, "W8A16"), f"quant_algo {algo!r} is not supported; use none or W8A16")
        _check(quant.get("kv_cache_quant_algo") is None,
               f"kv_cache_quant_algo {quant.get('kv_cache_quant_algo')!r} is not supported (there is no KV cache)")
        _check(heads % kv_heads == 0,
               f"num_attention_heads={heads} is not a multiple of num_key_value_heads={kv_heads}")
        _check(heads % tp == 0, f"tp_size={tp} does not divide num_attention_heads={heads}")
        _check(kv_heads % tp == 0 or tp % kv_heads == 0,
               f"tp_size={tp} neither divides nor is a multiple of num_key_value_heads={kv_heads}")
        _check(sizes["intermediate_size"] % tp == 0, f"tp_size={tp} does not divide intermediate_size")
        vocab, parallel = sizes["vocab_size"], bool(config.get("use_parallel_embedding", False)) and tp > 1
        if parallel:
            _check(config.get("embedding_sharding_dim", 0) == 0,
                   "embedding_sharding_dim 1 is not supported; shard the embedding by vocabulary rows (dim 0)")
            _check(vocab % tp == 0, f"use_parallel_embedding with tp_size={tp} needs it to divide vocab_size={vocab}")
        scaling = config.get("rotary_scaling")
        _check(scaling is None or isinstance(scaling, Mapping), f"rotary_scaling must be an object, got {scaling!r}")
        geometry = cls(
            dtype=dtype, logits_dtype=logits_dtype, vocab=vocab, padded_vocab=-(-vocab // tp) * tp,
            hidden=sizes["hidden_size"], intermediate=sizes["intermediate_size"],
            layers=sizes["num_hidden_layers"], heads=heads, kv_heads=kv_heads, head_size=head_size, tp=tp,
            vocab_parallel=parallel, norm_epsilon=float(config.get("norm_epsilon", 1e-5)),
            rotary_base=float(config.get("rotary_base", 10000.0)),
            rotary_scaling=None if scaling is None else tuple(sorted(scaling.items())), quantization=algo)
        rotary_inverse_frequencies(geometry)  # refuses an unsupported scaling before any layer is added
        return geometry


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise TrtcasError(message)


def expected_weights(geometry: DecoderGeometry) -> dict[str, tuple[tuple[int, ...], str]]:
    """Every tensor one rank's file must hold: name -> (shape, dtype name). Rank-independent."""
    g, dt = geometry, geometry.dtype
    out: dict[str, tuple[tuple[int, ...], str]] = {
        "transformer.vocab_embedding.weight": ((g.embedding_rows, g.hidden), dt)}

    def linear(prefix: str, rows: int, cols: int) -> None:
        if g.quantization == "W8A16":  # stored transposed, [in, out], with a per-output-channel scale
            out[f"{prefix}.weight"] = ((cols, rows), "int8")
            out[f"{prefix}.per_channel_scale"] = ((rows,), dt)
        else:
            out[f"{prefix}.weight"] = ((rows, cols), dt)

    for i in range(g.layers):
        p = f"transformer.layers.{i}"
        out[f"{p}.input_layernorm.weight"] = ((g.hidden,), dt)
        linear(f"{p}.attention.qkv", g.qkv_rows, g.hidden)
        linear(f"{p}.attention.dense", g.hidden, g.heads_per_rank * g.head_size)
        out[f"{p}.post_layernorm.weight"] = ((g.hidden,), dt)
        linear(f"{p}.mlp.fc", g.intermediate // g.tp, g.hidden)
        linear(f"{p}.mlp.gate", g.intermediate // g.tp, g.hidden)
        linear(f"{p}.mlp.proj", g.hidden, g.intermediate // g.tp)
    out["transformer.ln_f.weight"] = ((g.hidden,), dt)
    out["lm_head.weight"] = ((g.lm_head_rows, g.hidden), dt)
    return out


def _check_weights(geometry: DecoderGeometry, rank: int, weights: Mapping[str, np.ndarray]) -> None:
    """Every expected tensor present with its shape and dtype, and nothing unused (a bias or
    scale this network would silently drop would make a wrong engine)."""
    expected = expected_weights(geometry)
    missing = [name for name in expected if name not in weights]
    if missing:
        raise TrtcasError(f"rank {rank} weights lack {_names(missing)}; the checkpoint does not match its config.json")
    unused = sorted(set(weights) - set(expected))
    if unused:
        raise TrtcasError(f"rank {rank} weights include {_names(unused)}, which the native Llama network does not "
                          "use; refusing to drop them silently")
    for name, (shape, dtype) in expected.items():
        array = weights[name]
        if tuple(array.shape) != shape or array.dtype.name != dtype:
            raise TrtcasError(f"rank {rank} weight {name!r} is {array.dtype.name}{list(array.shape)}, config.json "
                              f"implies {dtype}{list(shape)} (tp_size={geometry.tp}); the rank file was converted "
                              "for another config")


def _names(names: Sequence[str], shown: int = 4) -> str:
    more = f" (+{len(names) - shown} more)" if len(names) > shown else ""
    return ", ".join(repr(n) for n in names[:shown]) + more


# --------------------------------------------------------------------------- rotary tables


def rotary_inverse_frequencies(geometry: DecoderGeometry) -> np.ndarray:
    """``1 / base^(2i/d)`` for the ``head_size/2`` rotated pairs, with ``linear`` or ``llama3``
    scaling applied as HF's ``rope_init_fn`` does; other scalings are refused (``dynamic``
    depends on the run-time length, which constant tables cannot follow)."""
    d = geometry.head_size
    inv = 1.0 / geometry.rotary_base ** (np.arange(0, d, 2, dtype=np.float64) / d)
    scaling = dict(geometry.rotary_scaling or ())
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind in (None, "default"):
        return inv
    factor = float(scaling.get("factor", 1.0))
    if kind == "linear":
        return inv / factor
    if kind == "llama3":
        low, high = float(scaling.get("low_freq_factor", 1.0)), float(scaling.get("high_freq_factor", 4.0))
        old_len = float(scaling.get("original_max_position_embeddings", 8192))
        wavelen = 2 * math.pi / inv
        scaled = np.where(wavelen > old_len / low, inv / factor, inv)
        smooth = (old_len / wavelen - low) / (high - low)
        medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
        return np.where(medium, (1 - smooth) * scaled / factor + smooth * scaled, scaled)
    raise TrtcasError(f"rotary_scaling type {kind!r} is not supported by the native network; "
                      "supported: none, linear, llama3")


def rotary_tables(geometry: DecoderGeometry, max_seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(cos, sin) of shape ``[1, max_seq_len, head_size/2]`` in the model dtype."""
    angles = np.outer(np.arange(max_seq_len, dtype=np.float64), rotary_inverse_frequencies(geometry))
    dtype = _NUMPY_DTYPE[geometry.dtype]
    return (np.cos(angles)[None].astype(dtype), np.sin(angles)[None].astype(dtype))


# --------------------------------------------------------------------------- the network holder


@dataclass(frozen=True, eq=False, kw_only=True)
class DecoderNetwork(ParsedNetwork):
    """A rank's decoder network, usable wherever a :class:`ParsedNetwork` is (``parser`` is
    None: the network was written, not parsed).

    ``constants`` are all named constants by name: the checkpoint tensors
    (``weight_names``) and the values derived from the config and rank (RoPE tables, scales,
    :data:`VOCAB_START`, int64 shape pieces). TensorRT does not copy constant weights, so
    holding them here keeps their memory alive as long as the network; those the engine
    reports refittable are what a refit of this rank must supply.
    ``profiles`` are the optimization profiles a build needs (empty for static shapes).
    """

    geometry: DecoderGeometry
    rank: int
    max_batch_size: int
    max_seq_len: int
    gather_logits: bool
    profiles: tuple[Profile, ...]
    constants: Mapping[str, np.ndarray] = field(repr=False)
    weight_names: tuple[str, ...] = field(repr=False)

    @property
    def output_shape(self) -> tuple[int, ...]:
        """``(batch, seq, vocab)``, or ``(batch, seq, padded_vocab / tp)`` for sharded logits;
        ``-1`` for dims the profile decides."""
        return tuple(int(d) for d in self.network.get_output(0).shape)


def build_decoder_network(backend: Backend, checkpoint_config: Mapping[str, Any], rank: int,
                          weights: Mapping[str, np.ndarray], max_batch_size: int, max_seq_len: int, *,
                          dynamic_shapes: bool = False, gather_logits: bool = True,
                          decomposable_attention: bool = True, log_severity: str = "info") -> DecoderNetwork:
    """Write rank ``rank``'s prefill network from its weights (as :func:`read_rank_weights` gives).

    Static shapes (default) fix ``input_ids`` to ``[max_batch_size, max_seq_len]``;
    ``dynamic_shapes`` makes both dims ``-1`` and returns the profile ``[1, 1] ..
    [max_batch_size, max_seq_len]`` (opt = max) in ``profiles``.
    """
    geometry = DecoderGeometry.from_config(checkpoint_config)
    for name, value in (("max_batch_size", max_batch_size), ("max_seq_len", max_seq_len)):
        _check(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
               f"{name} must be a positive integer, got {value!r}")
    _check(isinstance(rank, int) and 0 <= rank < geometry.tp, f"rank {rank!r} is outside 0..{geometry.tp - 1}")
    _check_weights(geometry, rank, weights)

    trt = backend.trt
    logger = backend.logger(log_severity)
    builder = trt.Builder(logger)
    if builder is None:
        raise TrtcasError(f"{backend.flavour} {backend.version} could not create a builder")
    network = builder.create_network(0)
    writer = _Writer(trt, network, geometry.dtype, decomposable_attention)
    batch, seq = (-1, -1) if dynamic_shapes else (max_batch_size, max_seq_len)
    ids = network.add_input(INPUT_NAME, trt.int32, (batch, seq))
    logits = _decoder(writer, geometry, rank, weights, ids, max_seq_len, gather_logits)
    logits.name = OUTPUT_NAME
    network.mark_output(logits)

    profiles = (Profile({INPUT_NAME: ((1, 1), (max_batch_size, max_seq_len), (max_batch_size, max_seq_len))}),) \
        if dynamic_shapes else ()
    return DecoderNetwork(
        backend=backend, source=f"{checkpoint_config['architecture']} rank {rank} of tp={geometry.tp}",
        parser=None, network=network, builder=builder, logger=logger, geometry=geometry, rank=rank,
        max_batch_size=max_batch_size, max_seq_len=max_seq_len, gather_logits=gather_logits,
        profiles=profiles, constants=dict(writer.constants), weight_names=tuple(expected_weights(geometry)))


class _Writer:
    """Adds layers to one network: names every layer, keeps every constant's array alive,
    and shares derived constants by name. Stateful, hence a class."""

    def __init__(self, trt: Any, network: Any, dtype: str, decomposable_attention: bool = True):
        self.trt, self.net, self.dtype = trt, network, dtype
        self.decomposable_attention = decomposable_attention
        self.trt_dtype = getattr(trt.DataType, _TRT_DTYPE[dtype])
        self.constants: dict[str, np.ndarray] = {}
        self._tensors: dict[str, Any] = {}

    def named(self, layer: Any, name: str) -> Any:
        """Name ``layer`` (names are the same on every rank) and return its output."""
        layer.name = name
        return layer.get_output(0)

    def constant(self, name: str, array: np.ndarray) -> Any:
        """A constant named ``name`` (its weights' refit name); one layer per name."""
        if name in self._tensors:
            return self._tensors[name]
        array = np.ascontiguousarray(array)
        self.constants[name] = array
        if array.dtype.name == "bfloat16":  # numpy has no bfloat16: pass it by pointer
            weights = self.trt.Weights(self.trt.DataType.BF16, array.ctypes.data, array.size)
        else:
            weights = self.trt.Weights(array)
        tensor = self.named(self.net.add_constant(array.shape, weights), name)
        self._tensors[name] = tensor
        return tensor

    def scalar(self, name: str, value: float, dtype: str | None = None, rank: int = 3) -> Any:
        """A broadcastable ``[1]*rank`` constant (TensorRT's elementwise needs equal ranks)."""
        return self.constant(name, np.full((1,) * rank, value, _NUMPY_DTYPE[dtype or self.dtype]))

    def shuffle(self, x: Any, name: str, reshape: Sequence[int] | None = None,
                transpose: Sequence[int] | None = None, then_transpose: Sequence[int] | None = None) -> Any:
        """Transpose, reshape (``0`` copies a dim, so dynamic dims need no shape tensor),
        transpose again: TensorRT's shuffle, each step optional."""
        layer = self.net.add_shuffle(x)
        if transpose is not None:
            layer.first_transpose = tuple(transpose)
        if reshape is not None:
            layer.reshape_dims = tuple(reshape)
        if then_transpose is not None:
            layer.second_transpose = tuple(then_transpose)
        return self.named(layer, name)

    def elementwise(self, a: Any, b: Any, op: str, name: str) -> Any:
        return self.named(self.net.add_elementwise(a, b, getattr(self.trt.ElementWiseOperation, op)), name)

    def cast(self, x: Any, dtype: Any, name: str) -> Any:
        return self.named(self.net.add_cast(x, dtype), name)

    def shape_with(self, like: Any, tail: Sequence[int], name: str) -> Any:
        """The int64 shape ``[*like.shape, *tail]``: a size for slices whose leading dims
        follow the (possibly dynamic) batch and sequence."""
        head = self.named(self.net.add_shape(like), f"{name}.shape")
        tail_tensor = self.constant(f"shape.tail.{'x'.join(map(str, tail))}", np.asarray(tail, np.int64))
        return self.named(self.net.add_concatenation([head, tail_tensor]), name)

    def slice(self, x: Any, start: Sequence[int], size: Any, name: str, wrap: bool = False) -> Any:
        layer = self.net.add_slice(x, tuple(start), (1,) * len(start), (1,) * len(start))
        layer.set_input(2, size)
        if wrap:
            layer.mode = self.trt.SampleMode.WRAP
        return self.named(layer, name)

    def linear(self, x: Any, prefix: str, weights: Mapping[str, np.ndarray]) -> Any:
        """``x [b, s, in] -> [b, s, out]`` with TRT-LLM's ``[out, in]`` weight (or W8A16's
        ``[in, out]`` int8 weight dequantized by its per-channel scale)."""
        kernel = self.constant(f"{prefix}.weight", weights[f"{prefix}.weight"])
        if f"{prefix}.per_channel_scale" in weights:
            scale = self.constant(f"{prefix}.per_channel_scale", weights[f"{prefix}.per_channel_scale"])
            layer = self.net.add_dequantize(kernel, scale, self.trt_dtype)
            layer.axis = 1
            kernel = self.named(layer, f"{prefix}.dequantize")
            op = self.trt.MatrixOperation.NONE
        else:
            op = self.trt.MatrixOperation.TRANSPOSE
        kernel = self.shuffle(kernel, f"{prefix}.weight.expand", reshape=(1, *kernel.shape))
        layer = self.net.add_matrix_multiply(x, self.trt.MatrixOperation.NONE, kernel, op)
        return self.named(layer, f"{prefix}.matmul")

    def rms_norm(self, x: Any, weight_name: str, weights: Mapping[str, np.ndarray], epsilon: float) -> Any:
        """``w * cast(x32 / sqrt(mean(x32²) + eps))``, HF's LlamaRMSNorm, over the last axis."""
        prefix = weight_name.removesuffix(".weight")
        fp32 = self.trt.DataType.FLOAT
        x32 = self.cast(x, fp32, f"{prefix}.to_float")
        square = self.elementwise(x32, x32, "PROD", f"{prefix}.square")
        mean = self.named(self.net.add_reduce(square, self.trt.ReduceOperation.AVG, 1 << 2, True), f"{prefix}.mean")
        eps = self.scalar("rms_norm.epsilon", epsilon, "float32")
        root = self.named(self.net.add_unary(self.elementwise(mean, eps, "SUM", f"{prefix}.add_epsilon"),
                                              self.trt.UnaryOperation.SQRT), f"{prefix}.sqrt")
        normed = self.cast(self.elementwise(x32, root, "DIV", f"{prefix}.normalize"), self.trt_dtype,
                           f"{prefix}.to_dtype")
        weight = self.shuffle(self.constant(weight_name, weights[weight_name]), f"{prefix}.weight.expand",
                              reshape=(1, 1, -1))
        return self.elementwise(normed, weight, "PROD", f"{prefix}.scale")

    def collective(self, x: Any, tp: int, name: str, gather: bool = False) -> Any:
        """ALL_REDUCE (sum) or ALL_GATHER (along dim 0) over ranks ``[0 .. tp-1]``, the same
        group list on every rank; ``num_ranks = tp`` sizes an all-gather's output."""
        trt = self.trt
        op, reduce = ((trt.CollectiveOperation.ALL_GATHER, trt.ReduceOperation.NONE) if gather
                      else (trt.CollectiveOperation.ALL_REDUCE, trt.ReduceOperation.SUM))
        layer = self.net.add_dist_collective(x, op, reduce, -1, list(range(tp)))
        layer.num_ranks = tp
        return self.named(layer, name)


def _decoder(w: _Writer, g: DecoderGeometry, rank: int, weights: Mapping[str, np.ndarray], ids: Any,
             max_seq_len: int, gather_logits: bool) -> Any:
    x = _embedding(w, g, rank, weights, ids)
    cos_table, sin_table = rotary_tables(g, max_seq_len)
    cache_size = w.shape_with(ids, (g.head_size // 2,), "rotary_embedding.cache_size")
    cos, sin = (w.slice(w.constant(f"rotary_embedding.{part}", table), (0, 0, 0), cache_size,
                        f"rotary_embedding.{part}_cache", wrap=True)
                for part, table in (("cos", cos_table), ("sin", sin_table)))
    for i in range(g.layers):
        x = _decoder_layer(w, g, weights, f"transformer.layers.{i}", x, ids, cos, sin)
    x = w.rms_norm(x, "transformer.ln_f.weight", weights, g.norm_epsilon)
    logits = w.linear(x, "lm_head", weights)
    if g.tp > 1 and gather_logits:
        logits = _gather_logits(w, g, logits, ids)
    if g.logits_dtype != g.dtype:
        logits = w.cast(logits, getattr(w.trt.DataType, _TRT_DTYPE[g.logits_dtype]), "lm_head.to_logits_dtype")
    return logits


def _embedding(w: _Writer, g: DecoderGeometry, rank: int, weights: Mapping[str, np.ndarray], ids: Any) -> Any:
    """Gather rows of the table; a vocab-parallel rank looks up only its own rows (others
    give zeros) and the ranks' rows are summed, TRT-LLM's parallel embedding. The rank's
    first row is the constant :data:`VOCAB_START`, so the layers are the same on every rank."""
    name = "transformer.vocab_embedding"
    table = w.constant(f"{name}.weight", weights[f"{name}.weight"])
    if not g.vocab_parallel:
        return w.named(w.net.add_gather(table, ids, 0), f"{name}.gather")
    rows = g.embedding_rows
    start = w.constant(VOCAB_START, np.array([[rank * rows]], np.int32))
    local = w.elementwise(ids, start, "SUB", f"{name}.local_ids")
    floor = w.constant(f"{name}.first_row", np.zeros((1, 1), np.int32))
    ceiling = w.constant(f"{name}.last_row", np.full((1, 1), rows - 1, np.int32))
    clamped = w.elementwise(w.elementwise(local, floor, "MAX", f"{name}.clamp_low"), ceiling, "MIN",
                            f"{name}.clamp_high")
    inside = w.cast(w.elementwise(local, clamped, "EQUAL", f"{name}.owned"), w.trt_dtype, f"{name}.owned_mask")
    rows_out = w.named(w.net.add_gather(table, clamped, 0), f"{name}.gather")
    mask = w.shuffle(inside, f"{name}.owned_mask.expand", reshape=(0, 0, 1))
    return w.collective(w.elementwise(rows_out, mask, "PROD", f"{name}.mask"), g.tp, f"{name}.all_reduce")


def _decoder_layer(w: _Writer, g: DecoderGeometry, weights: Mapping[str, np.ndarray], p: str, x: Any, ids: Any,
                   cos: Any, sin: Any) -> Any:
    trt, d = w.trt, g.head_size
    h = w.rms_norm(x, f"{p}.input_layernorm.weight", weights, g.norm_epsilon)
    qkv = w.linear(h, f"{p}.attention.qkv", weights)
    heads = {"q": (0, g.heads_per_rank), "k": (g.heads_per_rank, g.kv_heads_per_rank),
             "v": (g.heads_per_rank + g.kv_heads_per_rank, g.kv_heads_per_rank)}
    split = {}
    for part, (first, count) in heads.items():
        size = w.shape_with(ids, (count * d,), f"{p}.attention.{part}_size")
        flat = w.slice(qkv, (0, 0, first * d), size, f"{p}.attention.{part}")
        split[part] = w.shuffle(flat, f"{p}.attention.{part}.heads", reshape=(0, 0, count, d),
                                then_transpose=(0, 2, 1, 3))
    rotated = {}
    for part in ("q", "k"):
        layer = w.net.add_rotary_embedding(split[part], cos, sin, False, 0)
        rotated[part] = w.named(layer, f"{p}.attention.{part}.rotary")
    q = w.elementwise(rotated["q"], w.scalar("attention.query_scale", 1.0 / math.sqrt(d), rank=4), "PROD",
                      f"{p}.attention.q.scale")
    attention = w.net.add_attention_v2(q, rotated["k"], split["v"], trt.AttentionNormalizationOp.SOFTMAX,
                                       trt.CausalMaskKind.UPPER_LEFT)
    attention.name = f"{p}.attention.core"
    attention.decomposable = w.decomposable_attention
    context = w.shuffle(attention.get_output(0), f"{p}.attention.context", transpose=(0, 2, 1, 3),
                        reshape=(0, 0, g.heads_per_rank * d))
    out = w.linear(context, f"{p}.attention.dense", weights)
    if g.tp > 1:
        out = w.collective(out, g.tp, f"{p}.attention.all_reduce")
    x = w.elementwise(x, out, "SUM", f"{p}.attention.residual")

    h = w.rms_norm(x, f"{p}.post_layernorm.weight", weights, g.norm_epsilon)
    fc = w.linear(h, f"{p}.mlp.fc", weights)  # HF gate_proj: the activation applies to it
    up = w.linear(h, f"{p}.mlp.gate", weights)  # HF up_proj
    sigmoid = w.named(w.net.add_activation(fc, trt.ActivationType.SIGMOID), f"{p}.mlp.sigmoid")
    silu = w.elementwise(fc, sigmoid, "PROD", f"{p}.mlp.silu")
    out = w.linear(w.elementwise(silu, up, "PROD", f"{p}.mlp.gated"), f"{p}.mlp.proj", weights)
    if g.tp > 1:
        out = w.collective(out, g.tp, f"{p}.mlp.all_reduce")
    return w.elementwise(x, out, "SUM", f"{p}.mlp.residual")


def _gather_logits(w: _Writer, g: DecoderGeometry, logits: Any, ids: Any) -> Any:
    """All-gather the vocabulary shards. The collective concatenates along dim 0, so the
    vocabulary axis is moved first and back; the padding rows of a vocabulary tp does not
    divide are cut off."""
    moved = w.shuffle(logits, "lm_head.vocab_first", transpose=(2, 0, 1))
    gathered = w.collective(moved, g.tp, "lm_head.all_gather", gather=True)
    full = w.shuffle(gathered, "lm_head.vocab_last", transpose=(1, 2, 0))
    if g.padded_vocab == g.vocab:
        return full
    return w.slice(full, (0, 0, 0), w.shape_with(ids, (g.vocab,), "lm_head.vocab_size"), "lm_head.unpad")


# --------------------------------------------------------------------------- building, and naming what failed


@dataclass(frozen=True)
class LayerSupport:
    """Whether one layer kind compiles alone on this backend for ``targets``, and how fast."""

    probe: str
    layer_types: tuple[str, ...]
    compiled: bool
    seconds: float
    error: str | None = None


def build_decoder_engine(backend: Backend, network: ParsedNetwork, spec: EngineSpec, refittable: bool,
                         build: Callable[..., EnginePlan] = build_plan) -> EnginePlan:
    """``engine.build_plan`` for a written network, whose failure names the layer to blame.

    A network's own profiles are used when the spec has none. When the build fails with
    errors in the log (not a refittable build on a GPU-less machine, which ``build_plan``
    already explains), the layer is found from the log (every layer here is named) or, if
    the log names none, by compiling each layer type of the network alone.
    """
    if not spec.profiles and getattr(network, "profiles", ()):
        spec = replace(spec, profiles=network.profiles)
    mark = len(network.logger.lines)
    try:
        return build(backend, network, spec, refittable)
    except TrtcasError as exc:
        errors = network.logger.errors(mark)
        if refittable or spec.strip_weights or not errors:
            raise
        raise TrtcasError(_layer_failure(backend, network, spec, errors) or str(exc)) from None


def _layer_failure(backend: Backend, network: ParsedNetwork, spec: EngineSpec, errors: list[str]) -> str | None:
    who = f"{backend.flavour} {backend.version}"
    targets = ", ".join(resolved_targets(spec, backend)) or "this GPU"
    net = network.network
    layers = [(net.get_layer(i).name, backend.trt.ILayer.type.fget(net.get_layer(i)).name)
              for i in range(net.num_layers)]
    text = " ".join(errors)
    failed = f"building {network.source} for {targets} with {who} failed"
    hint = f"that layer (or its configuration) does not compile with {who} here: change it or build on a GPU " \
           "the backend supports"
    named = [(n, t) for n, t in layers if n and n in text]
    if named:
        name, kind = max(named, key=lambda item: len(item[0]))  # "x.fc" must not match for "x.fc.weight"
        return f"{failed} at {kind} layer {name!r}: {_reason(_last_with(errors, (name,)))}; {hint}"
    present = {t for _, t in layers}
    for kinds, words, kind_hint in _LAYER_WORDS:
        if present & set(kinds) and any(word in text.lower() for word in words):
            names = [n for n, t in layers if t in kinds]
            return (f"{failed} at {'/'.join(k for k in kinds if k in present)} layers ({len(names)}: "
                    f"{_names(names, 2)}): {_reason(_last_with(errors, words))}; {kind_hint or hint}")
    failing = [s for s in probe_layer_support(backend, spec.targets or None, layer_types=present) if not s.compiled]
    if not failing:
        return None
    culprit = failing[0]
    names = [n for n, t in layers if t in culprit.layer_types]
    return (f"building {network.source} for {targets} with {who} failed: {who} cannot compile "
            f"{'/'.join(culprit.layer_types)} layers ({culprit.probe}) here, not even alone "
            f"({tidy_message(culprit.error or '', 200)}); this network has {len(names)}: {_names(names, 3)}; "
            "build on a GPU the backend supports")


def _last_with(errors: list[str], words: Sequence[str]) -> str:
    return next((e for e in reversed(errors) if any(w in e.lower() or w in e for w in words)), errors[-1])


def _reason(line: str) -> str:
    """The part of a builder error line a user can act on: without the ``[E]`` tag, the
    ``IBuilder::...: Error Code N:`` preamble, source locations (``[shape.cpp:175: ...]``,
    ``foo.cpp:59:``, ``In f at /_src/...``), and Myelin's restatement of the node before
    ``Error is:``."""
    text = " ".join(line[4:].split()) if line[:1] == "[" else " ".join(line.split())
    text = re.sub(r"^IBuilder::\w+: Error Code \d+: ", "", text)
    text = text.split("Error is:", 1)[-1]
    text = re.sub(r"\[[\w./]+\.(?:cpp|h):\d+:[^\]]*\]\s*", "", text)
    text = re.sub(r"\b[\w/]+\.(?:cpp|h):\d+:\s*", "", text)
    text = re.sub(r"\s*In \w+ at /\S+", "", text)
    return tidy_message(text.strip(" ()"), 300)


# How build logs name a layer kind when they name no layer (Myelin: "Attention operation was
# not supported ..."); only the LLM layers, whose names are not ordinary words of a log.
# The hint replaces the generic one where the cause is known.
_LAYER_WORDS: tuple[tuple[tuple[str, ...], tuple[str, ...], str | None], ...] = (
    (("ATTENTION_INPUT", "ATTENTION_OUTPUT"), ("attention",),
     "there is no fused attention kernel for this head size and dtype on these targets: mark the attention "
     "decomposable (build_decoder_network(decomposable_attention=True), the default)"),
    (("ROTARY_EMBEDDING",), ("rotaryembedding", "rotary embedding"), None),
    (("DIST_COLLECTIVE",), ("distcollective", "collective", "nccl"), None),
    (("KV_CACHE_UPDATE",), ("kvcacheupdate", "kv cache"), None),
    (("NORMALIZATION",), ("normalization",), None),
    (("MOE",), ("moe",), None),
)


# Tiny one-layer networks, one per layer kind the decoder uses (and the LLM layers next to
# it), for :func:`probe_layer_support`. Each returns (its output, the layer types it tests).
_B, _S, _H, _HEADS, _KV, _D = 2, 8, 64, 4, 2, 16


def _probe_input(w: _Writer, shape: Sequence[int], dtype: Any = None) -> Any:
    return w.net.add_input(f"x{w.net.num_inputs}", dtype or w.trt_dtype, tuple(shape))


def _probe_gather(w: _Writer) -> Any:
    ids = _probe_input(w, (_B, _S), w.trt.int32)
    return w.named(w.net.add_gather(w.constant("table", np.ones((32, _H), np.float16)), ids, 0), "gather")


def _probe_matmul(w: _Writer) -> Any:
    return w.linear(_probe_input(w, (_B, _S, _H)), "proj", {"proj.weight": np.ones((2 * _H, _H), np.float16)})


def _probe_dequantize(w: _Writer) -> Any:
    weights = {"q.weight": np.ones((_H, 2 * _H), np.int8), "q.per_channel_scale": np.ones(2 * _H, np.float16)}
    return w.linear(_probe_input(w, (_B, _S, _H)), "q", weights)


def _probe_activation(w: _Writer) -> Any:
    return w.named(w.net.add_activation(_probe_input(w, (_B, _S, _H)), w.trt.ActivationType.SIGMOID), "sigmoid")


def _probe_elementwise(w: _Writer) -> Any:
    return w.elementwise(_probe_input(w, (_B, _S, _H)), _probe_input(w, (_B, _S, _H)), "PROD", "prod")


def _probe_rms_norm(w: _Writer) -> Any:
    return w.rms_norm(_probe_input(w, (_B, _S, _H)), "n.weight", {"n.weight": np.ones(_H, np.float16)}, 1e-5)


def _probe_normalization(w: _Writer) -> Any:
    scale = w.constant("scale", np.ones((1, 1, _H), np.float16))
    bias = w.constant("bias", np.zeros((1, 1, _H), np.float16))
    return w.named(w.net.add_normalization_v2(_probe_input(w, (_B, _S, _H)), scale, bias, 1 << 2), "norm")


def _probe_rotary(w: _Writer) -> Any:
    x = _probe_input(w, (_B, _HEADS, _S, _D))
    cos = w.constant("cos", np.ones((_B, _S, _D // 2), np.float16))
    sin = w.constant("sin", np.zeros((_B, _S, _D // 2), np.float16))
    return w.named(w.net.add_rotary_embedding(x, cos, sin, False, 0), "rotary")


def _probe_attention(w: _Writer) -> Any:
    q, k, v = (_probe_input(w, (_B, n, _S, _D)) for n in (_HEADS, _KV, _KV))
    layer = w.net.add_attention_v2(q, k, v, w.trt.AttentionNormalizationOp.SOFTMAX, w.trt.CausalMaskKind.UPPER_LEFT)
    layer.name = "attention"
    return layer.get_output(0)


def _probe_all_reduce(w: _Writer) -> Any:
    return w.collective(_probe_input(w, (_B, _S, _H)), 2, "all_reduce")


def _probe_all_gather(w: _Writer) -> Any:
    return w.collective(_probe_input(w, (_B, _S, _H)), 2, "all_gather", gather=True)


def _probe_dynamic_slice(w: _Writer) -> Any:
    ids = _probe_input(w, (_B, _S), w.trt.int32)
    return w.slice(w.constant("t", np.ones((1, _S, _D), np.float16)), (0, 0, 0), w.shape_with(ids, (_D,), "size"),
                   "slice", wrap=True)


_PROBES: dict[str, tuple[Callable[[_Writer], Any], tuple[str, ...]]] = {
    "gather": (_probe_gather, ("GATHER",)),
    "matrix_multiply": (_probe_matmul, ("MATRIX_MULTIPLY", "SHUFFLE")),
    "dequantize": (_probe_dequantize, ("DEQUANTIZE",)),
    "activation": (_probe_activation, ("ACTIVATION",)),
    "elementwise": (_probe_elementwise, ("ELEMENTWISE",)),
    "rms_norm": (_probe_rms_norm, ("CAST", "REDUCE", "UNARY")),
    "normalization": (_probe_normalization, ("NORMALIZATION",)),
    "rotary_embedding": (_probe_rotary, ("ROTARY_EMBEDDING",)),
    "attention": (_probe_attention, ("ATTENTION_INPUT", "ATTENTION_OUTPUT")),
    "all_reduce": (_probe_all_reduce, ("DIST_COLLECTIVE",)),
    "all_gather": (_probe_all_gather, ("DIST_COLLECTIVE",)),
    "dynamic_slice": (_probe_dynamic_slice, ("SLICE", "SHAPE", "CONCATENATION")),
}
PROBES = tuple(_PROBES)


def probe_layer_support(backend: Backend, targets: Sequence[str] | None = None,
                        probes: Sequence[str] | None = None,
                        layer_types: set[str] | None = None) -> tuple[LayerSupport, ...]:
    """Compile each layer kind alone (float16, weights embedded, not refittable) for
    ``targets`` (default: the backend's) and report which compile.

    ``probes`` picks kinds by name (:data:`PROBES`); ``layer_types`` picks the kinds that
    test any of those ``LayerType`` names. Each probe takes tens of milliseconds.
    """
    unknown = [p for p in probes or () if p not in _PROBES]
    _check(not unknown, f"unknown layer probe(s) {unknown}; use some of: {', '.join(PROBES)}")
    chosen = [p for p in (probes or PROBES) if layer_types is None or set(_PROBES[p][1]) & set(layer_types)]
    spec = EngineSpec(targets=tuple(targets or ()), refit="no")
    results = []
    for probe in chosen:
        make, types = _PROBES[probe]
        logger = backend.logger("error")
        builder = backend.trt.Builder(logger)
        network = builder.create_network(0)
        writer = _Writer(backend.trt, network, "float16")
        network.mark_output(make(writer))
        parsed = ParsedNetwork(backend=backend, source=f"a lone {probe} layer", parser=None, network=network,
                               builder=builder, logger=logger)
        start = time.perf_counter()
        try:
            build_plan(backend, parsed, spec, False)
            error = None
        except TrtcasError as exc:
            error = str(exc)
        results.append(LayerSupport(probe, types, error is None, time.perf_counter() - start, error))
    return tuple(results)
