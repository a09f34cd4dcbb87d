"""The decoder networks trtcas writes compute the Llama they were converted from.

No GPU can run the engine here, so the *network* is evaluated layer by layer in numpy
(trtcas.rules.evaluate) and its logits compared with transformers' LlamaForCausalLM on the
same HF checkpoint (or, without transformers, with a numpy Llama written in
tests/support/llama_reference.py from the HF weights). tp=1 and tp=2 (collectives simulated)
must agree with each other and with the reference:

- float32 networks: max abs error <= 1e-4 * max|logit| (measured: ~5e-7 relative);
- float16 networks: <= 5e-3 * max|logit| (measured ~1e-3: fp16 rounding of every layer);
- bfloat16 networks: <= 3e-2 * max|logit| (measured ~1e-2: bf16 keeps 8 bits of mantissa).
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from trtcas.rules.evaluate import EvaluateError, evaluate_network, evaluate_ranks
from trtcas.rules.llm.checkpoint import read_rank_weights, read_trtllm_checkpoint
from trtcas.rules.llm.convert import write_checkpoint
from trtcas.rules.llm.decoder.network import build_decoder_network
from trtcas.rules.llm.spec import ConvertSpec
from trtcas.rules.trt.backend import load_backend

from support.llama_reference import llama_logits, load_hf

pytest.importorskip("tensorrt_rtx", reason="these tests exercise TensorRT-RTX (pip install tensorrt-rtx-cu13)")

REPO = Path(__file__).resolve().parents[1]
BATCH, SEQ = 2, 8
TOLERANCE = {"float32": 1e-4, "float16": 5e-3, "bfloat16": 3e-2}


def _make_tiny_llama(out):
    spec = importlib.util.spec_from_file_location("make_tiny_llama", REPO / "examples" / "make_tiny_llama.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.make_tiny_llama(out)


@pytest.fixture(scope="module")
def backend():
    return load_backend("tensorrt_rtx")


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    return _make_tiny_llama(tmp_path_factory.mktemp("hf"))


@pytest.fixture(scope="module")
def ids():
    return np.random.default_rng(7).integers(0, 256, (BATCH, SEQ)).astype(np.int32)


@pytest.fixture(scope="module")
def reference(hf_dir, ids):
    """Logits of the HF model in float32: transformers when installed, else numpy."""
    config, weights = load_hf(hf_dir)
    numpy_logits = llama_logits(config, weights, ids)
    try:
        import torch
        from transformers import LlamaForCausalLM
    except ImportError:
        return numpy_logits
    model = LlamaForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.float32).eval()
    with torch.no_grad():
        hf_logits = model(torch.from_numpy(ids.astype(np.int64))).logits.numpy().astype(np.float64)
    # the two references agree with each other first
    assert np.abs(hf_logits - numpy_logits).max() <= 1e-5 * np.abs(hf_logits).max()
    return hf_logits


def _ranks(backend, hf_dir, tmp_path, spec, **kwargs):
    write_checkpoint(hf_dir, spec, tmp_path / "ckpt")
    ckpt = read_trtllm_checkpoint(tmp_path / "ckpt")
    return [build_decoder_network(backend, ckpt.config, r, read_rank_weights(ckpt, r), BATCH, SEQ,
                                  log_severity="error", **kwargs) for r in range(spec.tp)]


def _evaluate(backend, nets, ids):
    outs = evaluate_ranks(backend.trt, [n.network for n in nets], {"input_ids": ids}, [n.constants for n in nets])
    return [o["logits"].astype(np.float64) for o in outs]


def _relative_error(got, want):
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_tp1_and_tp2_networks_compute_the_model(backend, hf_dir, ids, reference, tmp_path, dtype):
    tp1 = _evaluate(backend, _ranks(backend, hf_dir, tmp_path / "tp1", ConvertSpec(tp=1, dtype=dtype)), ids)[0]
    tp2 = _evaluate(backend, _ranks(backend, hf_dir, tmp_path / "tp2", ConvertSpec(tp=2, dtype=dtype)), ids)
    assert tp1.shape == reference.shape == (BATCH, SEQ, 256)
    assert _relative_error(tp1, reference) <= TOLERANCE[dtype]
    for rank_logits in tp2:  # every rank all-gathers the full vocabulary
        assert _relative_error(rank_logits, reference) <= TOLERANCE[dtype]
        assert _relative_error(rank_logits, tp1) <= TOLERANCE[dtype]
    # the last position's next-token choice is the model's
    assert (tp1[:, -1].argmax(-1) == reference[:, -1].argmax(-1)).all()


@pytest.mark.parametrize("spec", [ConvertSpec(tp=2, dtype="float32", vocab_parallel=True),
                                  ConvertSpec(tp=2, dtype="float16", quantization="W8A16")],
                         ids=["vocab_parallel", "w8a16"])
def test_sharded_embedding_and_int8_weights(backend, hf_dir, ids, reference, tmp_path, spec):
    logits = _evaluate(backend, _ranks(backend, hf_dir, tmp_path, spec), ids)
    tolerance = 1e-4 if spec.quantization is None else 5e-2  # int8 per-channel weights
    for rank_logits in logits:
        assert _relative_error(rank_logits, reference) <= tolerance


def test_sharded_logits_concatenate_to_the_full_vocabulary(backend, hf_dir, ids, reference, tmp_path):
    nets = _ranks(backend, hf_dir, tmp_path, ConvertSpec(tp=2, dtype="float32"), gather_logits=False)
    shards = _evaluate(backend, nets, ids)
    assert shards[0].shape == (BATCH, SEQ, 128)
    assert _relative_error(np.concatenate(shards, axis=-1), reference) <= 1e-4


def test_dynamic_shapes_take_the_feed_shape(backend, hf_dir, reference, ids, tmp_path):
    nets = _ranks(backend, hf_dir, tmp_path, ConvertSpec(tp=1, dtype="float32"), dynamic_shapes=True)
    short = ids[:1, :5]
    logits = evaluate_network(backend.trt, nets[0].network, {"input_ids": short}, nets[0].constants)["logits"]
    assert logits.shape == (1, 5, 256)
    # causal: a prefix's logits are the full sequence's first positions
    assert _relative_error(logits.astype(np.float64), reference[:1, :5]) <= 1e-4


def test_a_tp2_rank_alone_is_refused(backend, hf_dir, ids, tmp_path):
    nets = _ranks(backend, hf_dir, tmp_path, ConvertSpec(tp=2, dtype="float32"))
    with pytest.raises(EvaluateError, match="spans 2 ranks"):
        evaluate_network(backend.trt, nets[0].network, {"input_ids": ids}, nets[0].constants)


def test_bf16_constants_need_their_arrays(backend, hf_dir, ids, tmp_path):
    nets = _ranks(backend, hf_dir, tmp_path, ConvertSpec(tp=1, dtype="bfloat16"))
    with pytest.raises(EvaluateError, match="BF16 constant weights"):
        evaluate_network(backend.trt, nets[0].network, {"input_ids": ids})


def _layer_names(net) -> set[str]:
    return {net.network.get_layer(i).name for i in range(net.network.num_layers)}


@pytest.mark.parametrize("dtype, tp", [("float32", 1), ("float16", 2), ("bfloat16", 1)])
def test_stacked_gate_and_up_projections_compute_the_same_model(backend, hf_dir, ids, reference, tmp_path,
                                                                dtype, tp):
    """An engine that embeds its weights is written with each gated MLP's two projections
    as one constant and one matmul (a lighter build); the network computes what the
    separate projections compute, and the model."""
    spec = ConvertSpec(tp=tp, dtype=dtype)
    separate = _ranks(backend, hf_dir, tmp_path / "separate", spec)
    stacked = _ranks(backend, hf_dir, tmp_path / "stacked", spec, stack_parallel_linears=True)
    assert "transformer.layers.0.mlp.fc_gate.matmul" in _layer_names(stacked[0])
    assert "transformer.layers.0.mlp.fc_gate.matmul" not in _layer_names(separate[0])
    assert stacked[0].constants["transformer.layers.0.mlp.fc_gate.weight"].shape[1] == \
        2 * separate[0].constants["transformer.layers.0.mlp.fc.weight"].shape[0]
    want, got = _evaluate(backend, separate, ids), _evaluate(backend, stacked, ids)
    for rank_want, rank_got in zip(want, got):
        assert _relative_error(rank_got, reference) <= TOLERANCE[dtype]
        assert _relative_error(rank_got, rank_want) <= {"float32": 1e-6, "float16": 1e-3, "bfloat16": 1e-2}[dtype]


def test_stacked_projections_take_dynamic_shapes(backend, hf_dir, ids, reference, tmp_path):
    """The stacked matmul's split copies the batch and sequence dims, whatever the feed."""
    net = _ranks(backend, hf_dir, tmp_path, ConvertSpec(tp=1, dtype="float32"), dynamic_shapes=True,
                 stack_parallel_linears=True)[0]
    short = ids[:1, :5]
    logits = evaluate_network(backend.trt, net.network, {"input_ids": short}, net.constants)["logits"]
    assert logits.shape == (1, 5, 256)
    assert _relative_error(logits.astype(np.float64), reference[:1, :5]) <= TOLERANCE["float32"]


def test_int8_projections_are_not_stacked(backend, hf_dir, ids, reference, tmp_path):
    """W8A16 weights are ``[in, out]`` with a scale each: they stay separate matmuls."""
    nets = _ranks(backend, hf_dir, tmp_path, ConvertSpec(tp=1, dtype="float16", quantization="W8A16"),
                  stack_parallel_linears=True)
    assert not any("fc_gate" in name for name in _layer_names(nets[0]))
    assert _relative_error(_evaluate(backend, nets, ids)[0], reference) <= 5e-2
