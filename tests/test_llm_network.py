"""TensorRT-LLM checkpoint rank -> native TensorRT network, built for real on TensorRT-RTX.

The tiny Llama (2 layers, hidden 64, 8 heads, 2 KV heads, vocab 256) is converted with tp=1
and tp=2; each rank's network must build, ranks of one checkpoint must be structurally
identical (the rank lives in the weights only), and the engine must compile on this GPU-less
machine. A build that fails must name the layer. No numerics: a CPU cannot run the engine.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from trtcas.errors import TrtcasError
from trtcas.rules.llm.checkpoint import read_rank_weights, read_trtllm_checkpoint
from trtcas.rules.llm.convert import write_checkpoint
from trtcas.rules.llm.decoder.geometry import DecoderGeometry, expected_weights
from trtcas.rules.llm.decoder.network import VOCAB_START, build_decoder_network
from trtcas.rules.llm.decoder.rope import rotary_tables
from trtcas.rules.llm.spec import ConvertSpec
from trtcas.rules.trt.backend import load_backend
from trtcas.rules.trt.diagnose import PROBES, probe_layer_support
from trtcas.rules.trt.diagnose import build_with_diagnosis as build_decoder_engine
from trtcas.rules.trt.engine import EngineSpec
from trtcas.rules.trt.network import ParsedNetwork

pytest.importorskip("tensorrt_rtx", reason="these tests exercise TensorRT-RTX (pip install tensorrt-rtx-cu13)")

REPO = Path(__file__).resolve().parents[1]
VOCAB, BATCH, SEQ = 256, 2, 16
CPU_SPEC = EngineSpec(targets=("sm86",), refit="no")


def _load_example():
    spec = importlib.util.spec_from_file_location("make_tiny_llama", REPO / "examples" / "make_tiny_llama.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def backend():
    return load_backend("tensorrt_rtx")


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    return _load_example().make_tiny_llama(tmp_path_factory.mktemp("hf"))


@pytest.fixture(scope="module")
def checkpoints(hf_dir, tmp_path_factory):
    """name -> converted TRT-LLM checkpoint directory."""
    specs = {"tp1": ConvertSpec(tp=1), "tp2": ConvertSpec(tp=2), "tp2_vocab": ConvertSpec(tp=2, vocab_parallel=True),
             "tp2_bf16": ConvertSpec(tp=2, dtype="bfloat16"), "tp2_w8a16": ConvertSpec(tp=2, quantization="W8A16")}
    root = tmp_path_factory.mktemp("trtllm")
    out = {}
    for name, spec in specs.items():
        write_checkpoint(hf_dir, spec, root / name)
        out[name] = root / name
    return out


@pytest.fixture(scope="module")
def layer_support(backend):
    return {s.probe: s for s in probe_layer_support(backend, ["sm86"])}


def _network(backend, directory, rank, **kwargs):
    ckpt = read_trtllm_checkpoint(directory)
    return build_decoder_network(backend, ckpt.config, rank, read_rank_weights(ckpt, rank), BATCH, SEQ, **kwargs)


def _layout(net):
    """What must be equal between ranks, read without canonical.py: every layer's type and
    name, and every output's dtype and shape, in order."""
    n = net.network
    rows = []
    for i in range(n.num_layers):
        layer = n.get_layer(i)
        outputs = [(str(layer.get_output(j).dtype), tuple(layer.get_output(j).shape)) for j in range(layer.num_outputs)]
        rows.append((layer.type.name, layer.name, outputs))
    return rows


def _canonicalize():
    from trtcas.rules.canonical import canonicalize_network

    return canonicalize_network


# --------------------------------------------------------------------------- reading checkpoints


def test_read_checkpoint_finds_every_rank(checkpoints):
    ckpt = read_trtllm_checkpoint(checkpoints["tp2"])
    assert (ckpt.world_size, ckpt.tp_size, ckpt.pp_size) == (2, 2, 1)
    assert [p.name for p in ckpt.rank_files] == ["rank0.safetensors", "rank1.safetensors"]
    weights = read_rank_weights(ckpt, 1)
    assert weights["transformer.layers.0.attention.qkv.weight"].shape == ((4 + 2) * 8, 64)
    assert weights["lm_head.weight"].dtype == np.float16


@pytest.mark.parametrize("breakage, message", [
    ("no_dir", "not found"),
    ("no_config", "has no config.json"),
    ("bad_json", "is not valid JSON"),
    ("not_object", "is not a JSON object"),
    ("no_hidden", "lacks 'hidden_size'"),
    ("missing_rank", "lacks rank1.safetensors"),
    ("extra_rank", "has rank2.safetensors but config.json's mapping says world_size=2"),
    ("world_mismatch", "is not tp_size\\*pp_size"),
])
def test_read_checkpoint_errors_are_one_line(checkpoints, tmp_path, breakage, message):
    target = tmp_path / "ckpt"
    shutil.copytree(checkpoints["tp2"], target)
    config_path = target / "config.json"
    config = json.loads(config_path.read_text())
    if breakage == "no_dir":
        target = tmp_path / "absent"
    elif breakage == "no_config":
        config_path.unlink()
    elif breakage == "bad_json":
        config_path.write_text("{\"architecture\": ")
    elif breakage == "not_object":
        config_path.write_text("[1, 2]")
    elif breakage == "no_hidden":
        del config["hidden_size"]
        config_path.write_text(json.dumps(config))
    elif breakage == "missing_rank":
        (target / "rank1.safetensors").unlink()
    elif breakage == "extra_rank":
        shutil.copy(target / "rank1.safetensors", target / "rank2.safetensors")
    elif breakage == "world_mismatch":
        config["mapping"]["world_size"] = 4
        config_path.write_text(json.dumps(config))
    with pytest.raises(TrtcasError, match=message) as info:
        read_trtllm_checkpoint(target)
    assert "\n" not in str(info.value)


def test_config_and_weight_mismatches_are_refused(backend, checkpoints):
    tp1 = read_trtllm_checkpoint(checkpoints["tp1"])
    tp2 = read_trtllm_checkpoint(checkpoints["tp2"])
    rank0 = read_rank_weights(tp2, 0)
    with pytest.raises(TrtcasError, match="converted for another config"):
        build_decoder_network(backend, tp1.config, 0, rank0, BATCH, SEQ)  # tp=2 shards under a tp=1 config
    missing = {k: v for k, v in rank0.items() if k != "transformer.ln_f.weight"}
    with pytest.raises(TrtcasError, match="lack 'transformer.ln_f.weight'"):
        build_decoder_network(backend, tp2.config, 0, missing, BATCH, SEQ)
    extra = {**rank0, "transformer.layers.0.attention.dense.bias": np.zeros(64, np.float16)}
    with pytest.raises(TrtcasError, match="does not use; refusing to drop them"):
        build_decoder_network(backend, tp2.config, 0, extra, BATCH, SEQ)
    with pytest.raises(TrtcasError, match="pipeline-parallel"):
        build_decoder_network(backend, {**tp2.config, "mapping": {"world_size": 2, "tp_size": 1, "pp_size": 2}},
                              0, rank0, BATCH, SEQ)
    with pytest.raises(TrtcasError, match="rank 2 is outside 0..1"):
        build_decoder_network(backend, tp2.config, 2, rank0, BATCH, SEQ)


def test_rotary_tables_follow_the_config():
    geometry = DecoderGeometry.from_config({
        "architecture": "LlamaForCausalLM", "dtype": "float32", "vocab_size": 256, "hidden_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 8, "intermediate_size": 128, "rotary_base": 10000.0})
    cos, sin = rotary_tables(geometry, 16)
    assert cos.shape == sin.shape == (1, 16, 4) and cos.dtype == np.float32
    assert np.allclose(cos[0, 0], 1) and np.allclose(sin[0, 0], 0)
    assert np.isclose(cos[0, 3, 0], np.cos(3.0))  # the first pair turns by one radian per position
    linear = DecoderGeometry.from_config({**_tiny_config(), "rotary_scaling": {"type": "linear", "factor": 2.0}})
    assert np.isclose(rotary_tables(linear, 16)[0][0, 3, 0], np.cos(1.5), atol=1e-3)
    with pytest.raises(TrtcasError, match="rope type 'dynamic' is not supported"):
        DecoderGeometry.from_config({**_tiny_config(), "rotary_scaling": {"type": "dynamic", "factor": 2.0}})


def _tiny_config():
    return {"architecture": "LlamaForCausalLM", "dtype": "float16", "vocab_size": 256, "hidden_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 8, "intermediate_size": 128}


# --------------------------------------------------------------------------- networks


@pytest.mark.parametrize("name, ranks", [("tp1", 1), ("tp2", 2), ("tp2_vocab", 2)])
def test_networks_build_with_logits_of_the_full_vocabulary(backend, checkpoints, name, ranks):
    nets = [_network(backend, checkpoints[name], rank) for rank in range(ranks)]
    for net in nets:
        assert net.output_shape == (BATCH, SEQ, VOCAB)
        assert net.network.get_input(0).name == "input_ids"
        assert set(net.weight_names) <= set(net.constants)  # every checkpoint tensor is a named constant
    assert all(_layout(net) == _layout(nets[0]) for net in nets)
    kinds = {row[0] for row in _layout(nets[0])}
    assert {"GATHER", "ROTARY_EMBEDDING", "ATTENTION_INPUT", "MATRIX_MULTIPLY"} <= kinds
    assert ("DIST_COLLECTIVE" in kinds) == (ranks > 1)


def test_sharded_logits_keep_a_vocabulary_slice(backend, checkpoints):
    net = _network(backend, checkpoints["tp2"], 1, gather_logits=False)
    assert net.output_shape == (BATCH, SEQ, VOCAB // 2)


def test_dynamic_shapes_come_with_a_profile(backend, checkpoints):
    net = _network(backend, checkpoints["tp2"], 0, dynamic_shapes=True)
    assert net.output_shape == (-1, -1, VOCAB)
    (profile,) = net.profiles
    assert dict(profile.shapes)["input_ids"].max == (BATCH, SEQ)


@pytest.mark.parametrize("name", ["tp2", "tp2_vocab"])
def test_tp2_ranks_share_structure_and_differ_in_weights(backend, checkpoints, name):
    canonicalize = _canonicalize()
    a, b = (_network(backend, checkpoints[name], rank) for rank in (0, 1))
    ca, cb = canonicalize(backend.trt, a.network), canonicalize(backend.trt, b.network)
    assert ca.structural_digest == cb.structural_digest
    assert ca.full_digest != cb.full_digest
    if name == "tp2_vocab":  # the rank enters as a weight value, never as structure
        assert a.constants[VOCAB_START].item() == 0 and b.constants[VOCAB_START].item() == VOCAB // 2


# --------------------------------------------------------------------------- engines on the CPU


def test_each_layer_kind_compiles_alone_on_cpu(layer_support):
    assert set(layer_support) == set(PROBES)
    failing = {p: s.error for p, s in layer_support.items() if not s.compiled}
    # Seen on TensorRT-RTX 1.7.1.116 without a GPU: every kind compiles (weights embedded).
    assert not failing, failing


@pytest.mark.parametrize("name, rank, dynamic", [
    ("tp1", 0, False), ("tp1", 0, True), ("tp2", 0, False), ("tp2", 1, False), ("tp2", 1, True),
    ("tp2_vocab", 1, False), ("tp2_bf16", 0, False), ("tp2_w8a16", 1, False),
])
def test_engine_builds_on_cpu(backend, checkpoints, layer_support, name, rank, dynamic):
    net = _network(backend, checkpoints[name], rank, dynamic_shapes=dynamic)
    collectives = net.geometry.tp > 1
    if collectives and not (layer_support["all_reduce"].compiled and layer_support["all_gather"].compiled):
        with pytest.raises(TrtcasError, match="DIST_COLLECTIVE"):
            build_decoder_engine(backend, net, CPU_SPEC, False)
        return
    plan = build_decoder_engine(backend, net, CPU_SPEC, False)
    assert len(plan.plan) > 100_000
    assert plan.effective_config["targets"] == ["sm86"]
    assert plan.seconds < 20


def test_failed_build_names_the_attention_layers(backend, checkpoints):
    # Head size 8 has no fused attention kernel; without decomposition the build must fail
    # with a line naming the attention layers and the way out, not crash.
    net = _network(backend, checkpoints["tp1"], 0, decomposable_attention=False)
    with pytest.raises(TrtcasError) as info:
        build_decoder_engine(backend, net, CPU_SPEC, False)
    message = str(info.value)
    assert "ATTENTION_INPUT/ATTENTION_OUTPUT layers" in message
    assert "transformer.layers.0.attention.core" in message
    assert "decomposable_attention=True" in message
    assert "\n" not in message


def test_failed_build_names_the_layer_the_log_names(backend):
    # KVCacheUpdate with int64 write indices fails in Myelin, and the log names the layer.
    trt = backend.trt
    logger = backend.logger("info")
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    cache = network.add_input("cache", trt.float16, (2, 4, 32, 16))
    update = network.add_input("update", trt.float16, (2, 4, 8, 16))
    where = network.add_input("where", trt.int64, (2,))
    layer = network.add_kv_cache_update(cache, update, where, trt.KVCacheMode.LINEAR)
    layer.name = "decoder.k_cache"
    network.mark_output(layer.get_output(0))
    parsed = ParsedNetwork(backend=backend, source="a kv-cache network", parser=None, network=network,
                           builder=builder, logger=logger)
    with pytest.raises(TrtcasError, match="failed at KV_CACHE_UPDATE layer 'decoder.k_cache'.*int32"):
        build_decoder_engine(backend, parsed, CPU_SPEC, False)


def test_refittable_build_keeps_the_engine_explanation(backend, checkpoints):
    if backend.capabilities.can_build_refittable:
        pytest.skip("this machine can build refittable engines")
    net = _network(backend, checkpoints["tp1"], 0)
    with pytest.raises(TrtcasError, match="cannot build refittable"):
        build_decoder_engine(backend, net, EngineSpec(targets=("sm86",), refit="yes"), True)


def test_expected_weights_match_the_converter(checkpoints):
    for name in ("tp1", "tp2", "tp2_vocab", "tp2_w8a16"):
        ckpt = read_trtllm_checkpoint(checkpoints[name])
        expected = expected_weights(DecoderGeometry.from_config(ckpt.config))
        for rank in range(ckpt.world_size):
            weights = read_rank_weights(ckpt, rank)
            assert {k: (tuple(v.shape), v.dtype.name) for k, v in weights.items()} == expected


def test_padded_vocabulary_is_cut_back_after_the_gather(backend, tmp_path):
    # vocab 255 with tp=2: each rank's lm_head has 128 rows, the last one zero padding.
    hf = _load_example().make_tiny_llama(tmp_path / "hf", vocab_size=255)
    write_checkpoint(hf, ConvertSpec(tp=2), tmp_path / "tp2")
    gathered = _network(backend, tmp_path / "tp2", 1)
    assert gathered.output_shape == (BATCH, SEQ, 255)
    assert _network(backend, tmp_path / "tp2", 1, gather_logits=False).output_shape == (BATCH, SEQ, 128)
    assert len(build_decoder_engine(backend, gathered, CPU_SPEC, False).plan) > 100_000
