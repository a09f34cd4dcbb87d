"""A Mixtral TensorRT-LLM checkpoint rank -> a TensorRT network of TensorRT's own layers.

The prefill network of HF's ``MixtralForCausalLM``: the shared decoder's blocks (embedding,
RMSNorm, RoPE, GQA attention through ``IAttention``, under a window mask when a
``sliding_window`` shorter than ``max_seq_len`` cuts, lm_head) with the MLP replaced by a
sparse mixture of experts. Rank-independent in structure like the shared decoder's network.

The MoE block is written *densely* from matmul, softmax, top-k, elementwise and shuffle
layers, not with ``INetworkDefinition.add_moe``:

- router: ``softmax(h32 · Wrᵀ)`` in float32 (TensorRT-LLM's router is a float32 layer; HF
  takes the softmax in float32 too);
- top-k: ``ITopKLayer`` gives the k largest probabilities; an expert is selected when its
  probability is at least the k-th largest, and the selected probabilities are renormalized
  to sum to 1 (Mixtral's RENORMALIZE). Unselected experts get a gate of exactly 0;
- experts: every expert's ``[w3; w1]`` of this rank runs on every token as one matmul
  (``[b, s, hidden] x [hidden, experts * 2 * inter/tp]``), ``silu(w1 x) * (w3 x)`` per
  expert, multiplied by the token's gate for that expert, and one matmul with the stacked
  ``w2`` sums the experts (``[b, s, experts * inter/tp] x [experts * inter/tp, hidden]``);
- with tp > 1 each rank holds a slice of every expert's intermediate size, so the rank's sum
  is a partial sum and one all-reduce completes it, as for a dense MLP.

Why dense: the result is exactly HF's (an unselected expert contributes 0 x its output), every
layer is one TensorRT-RTX builds on a CPU-only machine and the numpy evaluator runs, and the
layers say everything the math depends on (``IMoELayer``'s routing and activation are set
through setters the public API cannot read back, so the canonical network could neither key
nor evaluate them). The cost is compute: all experts run on every token (``experts / top_k``
times a sparse kernel's MLP FLOPs), which is acceptable for checking and for small expert
counts; a deployment that needs sparse dispatch should use TensorRT-LLM's MoE plugin.
Ties at the k-th probability select every tied expert (HF's ``topk`` picks one).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from trtcas.rules.llm.decoder.geometry import check_weights
from trtcas.rules.llm.decoder.network import DecoderNetwork, decoder
from trtcas.rules.llm.gemma2.network import finish_network, start_network
from trtcas.rules.llm.mixtral.config import MixtralGeometry, expected_weights
from trtcas.rules.trt.layers import LayerWriter


def build_mixtral_network(backend, checkpoint_config: Mapping[str, Any], rank: int, weights: Mapping[str, np.ndarray],
                          max_batch_size: int, max_seq_len: int, *, dynamic_shapes: bool = False,
                          gather_logits: bool = True, decomposable_attention: bool = True,
                          log_severity: str = "info", stack_parallel_linears: bool = False) -> DecoderNetwork:
    """Write rank ``rank``'s Mixtral prefill network from its weights (its experts are
    not stacked: ``stack_parallel_linears`` only reaches dense gated MLPs)."""
    g = MixtralGeometry.from_config(checkpoint_config)
    builder, logger, w, ids = start_network(backend, g, rank, log_severity, max_batch_size, max_seq_len,
                                            dynamic_shapes, decomposable_attention, stack_parallel_linears)
    expected = expected_weights(g)
    check_weights(expected, g.tp, rank, weights)
    logits = decoder(w, g, rank, weights, ids, max_seq_len, gather_logits, mlp=_moe_block)
    return finish_network(backend, builder, logger, w, logits, g, rank, max_batch_size, max_seq_len, dynamic_shapes,
                          gather_logits, tuple(expected))


def _moe_block(w: LayerWriter, g: MixtralGeometry, weights: Mapping[str, np.ndarray], p: str, h: Any, ids: Any) -> Any:
    """A layer's sparse MoE block (``decoder``'s ``mlp``): the experts, all-reduced across ranks."""
    out = _moe(w, g, weights, h, ids, p)
    return w.collective(out, g.tp, f"{p}.all_reduce") if g.tp > 1 else out


def _gates(w: LayerWriter, g: MixtralGeometry, weights: Mapping[str, np.ndarray], h: Any, ids: Any, p: str) -> Any:
    """``[b, s, experts, 1]`` gates in the model dtype: renormalized top-k router probabilities, 0 elsewhere."""
    trt = w.trt
    h32 = w.cast(h, trt.DataType.FLOAT, f"{p}.router.to_float")
    softmax = w.net.add_softmax(w.linear(h32, f"{p}.router", weights))
    softmax.axes = 1 << 2
    probs = w.named(softmax, f"{p}.router.softmax")
    top = w.net.add_topk(probs, trt.TopKOperation.MAX, g.top_k, 1 << 2)
    top.name = f"{p}.router.topk"
    kth = w.slice(top.get_output(0), (0, 0, g.top_k - 1), w.shape_with(ids, (1,), f"{p}.router.kth_size"),
                  f"{p}.router.kth")
    below = w.elementwise(probs, kth, "LESS", f"{p}.router.below_kth")
    selected = w.cast(w.named(w.net.add_unary(below, trt.UnaryOperation.NOT), f"{p}.router.selected"),
                      trt.DataType.FLOAT, f"{p}.router.selected_mask")
    kept = w.elementwise(probs, selected, "PROD", f"{p}.router.kept")
    total = w.named(w.net.add_reduce(kept, trt.ReduceOperation.SUM, 1 << 2, True), f"{p}.router.total")
    gates = w.cast(w.elementwise(kept, total, "DIV", f"{p}.router.renormalize"), w.trt_dtype, f"{p}.router.gates")
    return w.shuffle(gates, f"{p}.router.gates.expand", reshape=(0, 0, g.experts, 1))


def _moe(w: LayerWriter, g: MixtralGeometry, weights: Mapping[str, np.ndarray], h: Any, ids: Any, p: str) -> Any:
    """Every expert on every token, weighted by its gate and summed: ``[b, s, hidden]`` (a
    partial sum over this rank's slice of the experts when tp > 1)."""
    trt, e, rows = w.trt, g.experts, g.expert_rows
    mm = trt.MatrixOperation
    fc = w.shuffle(w.constant(f"{p}.fc.weight", weights[f"{p}.fc.weight"]), f"{p}.fc.weight.flat",
                   reshape=(1, e * 2 * rows, g.hidden))
    both = w.named(w.net.add_matrix_multiply(h, mm.NONE, fc, mm.TRANSPOSE), f"{p}.fc.matmul")
    both = w.shuffle(both, f"{p}.fc.per_expert", reshape=(0, 0, e, 2 * rows))
    size = w.shape_with(ids, (e, rows), f"{p}.fc.half_size")
    up = w.slice(both, (0, 0, 0, 0), size, f"{p}.fc.up")  # w3
    gate = w.slice(both, (0, 0, 0, rows), size, f"{p}.fc.gate")  # w1: the SiLU input
    sigmoid = w.named(w.net.add_activation(gate, trt.ActivationType.SIGMOID), f"{p}.sigmoid")
    act = w.elementwise(w.elementwise(gate, sigmoid, "PROD", f"{p}.silu"), up, "PROD", f"{p}.gated")
    weighted = w.elementwise(act, _gates(w, g, weights, h, ids, p), "PROD", f"{p}.weighted")
    flat = w.shuffle(weighted, f"{p}.experts_flat", reshape=(0, 0, e * rows))
    proj = w.shuffle(w.constant(f"{p}.proj.weight", weights[f"{p}.proj.weight"]), f"{p}.proj.weight.flat",
                     transpose=(0, 2, 1), reshape=(1, e * rows, g.hidden))
    return w.named(w.net.add_matrix_multiply(flat, mm.NONE, proj, mm.NONE), f"{p}.proj.matmul")
