"""HF Llama -> TensorRT-LLM checkpoint conversion, checked against an independent numpy reference.

The reference reads HF tensors with ``safetensors.numpy`` (float16) or ``ml_dtypes`` (bfloat16)
and slices them by the rules of TensorRT-LLM's LLaMA converter, written out longhand here.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file

from trtcas.errors import TrtcasError
from trtcas.rules.formats.safetensors import encode as encode_safetensors
from trtcas.rules.formats.safetensors import read_layout as read_safetensors_layout
from trtcas.rules.llm.convert import (
    convert_rank,
    iter_rank_tensors,
    plan_rank,
    quantize_int8_per_channel,
    trtllm_config,
    write_checkpoint,
)
from trtcas.rules.llm.hf import bf16_bits_to_float32, read_hf_config
from trtcas.rules.llm.spec import ConvertSpec

ROOT = Path(__file__).resolve().parents[1]
HIDDEN, INTER, HEADS, KV_HEADS, LAYERS, VOCAB = 64, 128, 8, 2, 2, 256
HEAD_DIM = HIDDEN // HEADS


def _load_example():
    spec = importlib.util.spec_from_file_location("make_tiny_llama", ROOT / "examples" / "make_tiny_llama.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tiny = _load_example()


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """Tiny HF checkpoints that differ in exactly one way each from ``base``."""
    root = tmp_path_factory.mktemp("hf")
    return {
        "base": tiny.make_tiny_llama(root / "base", seed=0),
        "sharded": tiny.make_tiny_llama(root / "sharded", seed=0, shards=2),
        "finetuned": tiny.make_tiny_llama(root / "finetuned", seed=0, finetune_layer=1),
        "bf16": tiny.make_tiny_llama(root / "bf16", seed=0, dtype="bfloat16"),
        "tied": tiny.make_tiny_llama(root / "tied", seed=0, tie_word_embeddings=True),
        "vocab250": tiny.make_tiny_llama(root / "vocab250", seed=0, vocab_size=250),
    }


def hf_reference(directory: Path) -> dict[str, np.ndarray]:
    """float32 HF tensors of a float16 single-file checkpoint, read by safetensors itself."""
    return {name: array.astype(np.float32) for name, array in load_file(directory / "model.safetensors").items()}


def f32(array: np.ndarray) -> np.ndarray:
    return np.asarray(array).astype(np.float32)


def concat_ranks(hf_dir, spec, name, axis):
    return np.concatenate([f32(convert_rank(hf_dir, spec, r)[name]) for r in range(spec.tp)], axis=axis)


# --------------------------------------------------------------------------- tensor parallel math


@pytest.mark.parametrize("tp", [1, 2, 4])
def test_qkv_holds_each_ranks_heads(ckpts, tp):
    """q split by heads; k/v split by KV heads, or replicated when tp > num_kv_heads (dup_kv_weight)."""
    hf = hf_reference(ckpts["base"])
    spec = ConvertSpec(tp=tp)
    q_per_rank = HEADS // tp
    for rank in range(tp):
        for layer in range(LAYERS):
            qkv = f32(convert_rank(ckpts["base"], spec, rank)[f"transformer.layers.{layer}.attention.qkv.weight"])
            src = f"model.layers.{layer}.self_attn"
            if KV_HEADS >= tp:
                kv_heads = range(rank * KV_HEADS // tp, (rank + 1) * KV_HEADS // tp)
            else:
                kv_heads = range(rank // (tp // KV_HEADS), rank // (tp // KV_HEADS) + 1)
            q_rows = slice(rank * q_per_rank * HEAD_DIM, (rank + 1) * q_per_rank * HEAD_DIM)
            kv_rows = slice(kv_heads.start * HEAD_DIM, kv_heads.stop * HEAD_DIM)
            q_len, kv_len = q_per_rank * HEAD_DIM, len(kv_heads) * HEAD_DIM
            assert qkv.shape == (q_len + 2 * kv_len, HIDDEN)
            np.testing.assert_array_equal(qkv[:q_len], hf[f"{src}.q_proj.weight"][q_rows])
            np.testing.assert_array_equal(qkv[q_len:q_len + kv_len], hf[f"{src}.k_proj.weight"][kv_rows])
            np.testing.assert_array_equal(qkv[q_len + kv_len:], hf[f"{src}.v_proj.weight"][kv_rows])


def test_kv_heads_replicated_when_tp_exceeds_them(ckpts):
    spec = ConvertSpec(tp=4)
    name = "transformer.layers.0.attention.qkv.weight"
    qkv = [f32(convert_rank(ckpts["base"], spec, r)[name]) for r in range(4)]
    kv = slice(2 * HEAD_DIM, None)  # after this rank's two query heads
    np.testing.assert_array_equal(qkv[0][kv], qkv[1][kv])
    np.testing.assert_array_equal(qkv[2][kv], qkv[3][kv])
    assert not np.array_equal(qkv[1][kv], qkv[2][kv])


@pytest.mark.parametrize("tp", [1, 2, 4])
def test_row_parallel_shards_concatenate_on_dim1(ckpts, tp):
    hf = hf_reference(ckpts["base"])
    spec = ConvertSpec(tp=tp)
    for layer in range(LAYERS):
        dense = concat_ranks(ckpts["base"], spec, f"transformer.layers.{layer}.attention.dense.weight", axis=1)
        proj = concat_ranks(ckpts["base"], spec, f"transformer.layers.{layer}.mlp.proj.weight", axis=1)
        np.testing.assert_array_equal(dense, hf[f"model.layers.{layer}.self_attn.o_proj.weight"])
        np.testing.assert_array_equal(proj, hf[f"model.layers.{layer}.mlp.down_proj.weight"])


@pytest.mark.parametrize("tp", [1, 2, 4])
def test_column_parallel_shards_concatenate_on_dim0(ckpts, tp):
    """TRT-LLM's mlp.fc is HF gate_proj and mlp.gate is HF up_proj (get_prefix_and_param_name_map)."""
    hf = hf_reference(ckpts["base"])
    spec = ConvertSpec(tp=tp)
    for layer in range(LAYERS):
        fc = concat_ranks(ckpts["base"], spec, f"transformer.layers.{layer}.mlp.fc.weight", axis=0)
        gate = concat_ranks(ckpts["base"], spec, f"transformer.layers.{layer}.mlp.gate.weight", axis=0)
        np.testing.assert_array_equal(fc, hf[f"model.layers.{layer}.mlp.gate_proj.weight"])
        np.testing.assert_array_equal(gate, hf[f"model.layers.{layer}.mlp.up_proj.weight"])
    np.testing.assert_array_equal(concat_ranks(ckpts["base"], spec, "lm_head.weight", axis=0), hf["lm_head.weight"])


def test_norms_replicated_on_every_rank(ckpts):
    hf = hf_reference(ckpts["base"])
    spec = ConvertSpec(tp=2)
    for rank in range(2):
        out = convert_rank(ckpts["base"], spec, rank)
        np.testing.assert_array_equal(f32(out["transformer.ln_f.weight"]), hf["model.norm.weight"])
        for layer in range(LAYERS):
            np.testing.assert_array_equal(f32(out[f"transformer.layers.{layer}.input_layernorm.weight"]),
                                          hf[f"model.layers.{layer}.input_layernorm.weight"])
            np.testing.assert_array_equal(f32(out[f"transformer.layers.{layer}.post_layernorm.weight"]),
                                          hf[f"model.layers.{layer}.post_attention_layernorm.weight"])


def test_embedding_split_by_vocab_only_when_vocab_parallel(ckpts):
    hf = hf_reference(ckpts["base"])
    embed = hf["model.embed_tokens.weight"]
    parallel = ConvertSpec(tp=4, vocab_parallel=True)
    np.testing.assert_array_equal(concat_ranks(ckpts["base"], parallel, "transformer.vocab_embedding.weight", 0), embed)
    assert convert_rank(ckpts["base"], parallel, 1)["transformer.vocab_embedding.weight"].shape == (VOCAB // 4, HIDDEN)
    for rank in range(4):
        full = convert_rank(ckpts["base"], ConvertSpec(tp=4), rank)["transformer.vocab_embedding.weight"]
        np.testing.assert_array_equal(f32(full), embed)


def test_lm_head_padded_when_tp_does_not_divide_vocab(ckpts):
    """pad_vocab_size: 250 rows -> 4 x 63, the last two rows zero; config keeps vocab_size 250."""
    hf = hf_reference(ckpts["vocab250"])
    spec = ConvertSpec(tp=4)
    head = concat_ranks(ckpts["vocab250"], spec, "lm_head.weight", axis=0)
    assert head.shape == (252, HIDDEN)
    np.testing.assert_array_equal(head[:250], hf["lm_head.weight"])
    assert not head[250:].any()
    assert trtllm_config(read_hf_config(ckpts["vocab250"]), spec)["vocab_size"] == 250
    with pytest.raises(TrtcasError, match="does not divide vocab_size=250"):
        convert_rank(ckpts["vocab250"], ConvertSpec(tp=4, vocab_parallel=True), 0)


def test_tied_embeddings_give_lm_head_from_embed_tokens(ckpts):
    hf = hf_reference(ckpts["tied"])
    assert "lm_head.weight" not in hf
    spec = ConvertSpec(tp=2)
    np.testing.assert_array_equal(concat_ranks(ckpts["tied"], spec, "lm_head.weight", 0), hf["model.embed_tokens.weight"])
    assert plan_rank(read_hf_config(ckpts["tied"]), spec, 0)[-1].sources == ("model.embed_tokens.weight",)


@pytest.mark.parametrize("pp", [2])
def test_pipeline_stages_hold_their_layers(ckpts, pp):
    """Rank = pp_rank * tp + tp_rank; layers renumbered from 0 per stage; embedding first, head last."""
    hf = hf_reference(ckpts["base"])
    spec = ConvertSpec(tp=2, pp=pp)
    first, last = convert_rank(ckpts["base"], spec, 0), convert_rank(ckpts["base"], spec, 3)
    assert "transformer.vocab_embedding.weight" in first and "lm_head.weight" not in first
    assert "lm_head.weight" in last and "transformer.ln_f.weight" in last
    assert "transformer.vocab_embedding.weight" not in last
    assert not any(name.startswith("transformer.layers.1.") for name in {**first, **last})
    np.testing.assert_array_equal(f32(last["transformer.layers.0.mlp.proj.weight"]),
                                  hf["model.layers.1.mlp.down_proj.weight"][:, INTER // 2:])


# --------------------------------------------------------------------------- dtypes and quantization


def test_dtype_casts(ckpts):
    hf = hf_reference(ckpts["base"])
    name, src = "transformer.layers.0.mlp.fc.weight", "model.layers.0.mlp.gate_proj.weight"
    as_f32 = convert_rank(ckpts["base"], ConvertSpec(dtype="float32"), 0)[name]
    assert as_f32.dtype == np.float32
    np.testing.assert_array_equal(as_f32, hf[src])
    as_bf16 = convert_rank(ckpts["base"], ConvertSpec(dtype="bfloat16"), 0)[name]
    assert as_bf16.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(as_bf16.view(np.uint16), hf[src].astype(ml_dtypes.bfloat16).view(np.uint16))


def test_bfloat16_source_read_by_bit_shift(ckpts):
    layout = read_safetensors_layout(ckpts["bf16"] / "model.safetensors")
    dtype, shape, begin, end = layout.tensors["model.layers.1.self_attn.o_proj.weight"]
    assert dtype == "BF16"
    raw = (ckpts["bf16"] / "model.safetensors").read_bytes()[begin:end]
    reference = np.frombuffer(raw, ml_dtypes.bfloat16).reshape(shape).astype(np.float32)
    out = convert_rank(ckpts["bf16"], ConvertSpec(tp=2, dtype="float32"), 1)["transformer.layers.1.attention.dense.weight"]
    np.testing.assert_array_equal(out, reference[:, shape[1] // 2:])


def test_bf16_bits_to_float32_is_exact():
    bits = np.array([0x0000, 0x8000, 0x3F80, 0xBF80, 0x7F80, 0xFF80, 0x0001, 0x7F7F, 0x1234, 0xC2F7], np.uint16)
    np.testing.assert_array_equal(bf16_bits_to_float32(bits), bits.view(ml_dtypes.bfloat16).astype(np.float32))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_int8_weight_only_dequantizes_within_half_a_step(ckpts, dtype):
    """W8A16: int8 [in, out] (TRT-LLM's WeightOnlyQuantLinear layout) + per_channel_scale [out]."""
    plain = ConvertSpec(tp=2, dtype=dtype)
    quant = ConvertSpec(tp=2, dtype=dtype, quantization="W8A16")
    for rank in range(2):
        reference, out = convert_rank(ckpts["base"], plain, rank), convert_rank(ckpts["base"], quant, rank)
        for prefix in ("attention.qkv", "attention.dense", "mlp.fc", "mlp.gate", "mlp.proj"):
            name = f"transformer.layers.1.{prefix}"
            weight, scale = out[f"{name}.weight"], out[f"{name}.per_channel_scale"]
            expected = f32(reference[f"{name}.weight"]).T  # [in, out]
            assert weight.dtype == np.int8 and weight.shape == expected.shape
            assert scale.dtype == reference[f"{name}.weight"].dtype and scale.shape == (expected.shape[1],)
            step = f32(scale)
            error = np.abs(weight.astype(np.float32) * step - expected)
            assert (error <= step / 2 * (1 + 1e-6)).all(), name
        for kept in ("transformer.vocab_embedding.weight", "lm_head.weight", "transformer.ln_f.weight"):
            np.testing.assert_array_equal(out[kept].view(np.uint8), reference[kept].view(np.uint8))
    config = trtllm_config(read_hf_config(ckpts["base"]), quant)
    assert config["quantization"] == {"quant_algo": "W8A16", "kv_cache_quant_algo": None}
    assert config["disable_weight_only_quant_plugin"] is True


def test_quantizer_edge_cases():
    weight = np.array([[0.0, 0.0, 0.0], [1.0, -0.5, 0.25], [-2.0, 2.0, 127.0]], np.float32)  # [out, in]
    q, scale = quantize_int8_per_channel(weight, "float32")
    assert q.shape == (3, 3) and not q[:, 0].any() and scale[0] == 0  # an all-zero channel
    np.testing.assert_array_equal(q[:, 1], [127, -64, 32])  # -63.5 -> -64: ties away from zero, like C round
    np.testing.assert_array_equal(np.abs(q).max(axis=0), [0, 127, 127])


# --------------------------------------------------------------------------- inputs and outputs


def test_sharded_input_converts_identically(ckpts):
    for spec in (ConvertSpec(tp=2), ConvertSpec(tp=4, dtype="bfloat16", quantization="W8A16")):
        for rank in range(spec.tp):
            single, sharded = convert_rank(ckpts["base"], spec, rank), convert_rank(ckpts["sharded"], spec, rank)
            assert list(single) == list(sharded)
            for name in single:
                assert single[name].tobytes() == sharded[name].tobytes(), name


def test_truncated_file_is_reported_by_name(ckpts, tmp_path):
    for source, victim in (("base", "model.safetensors"), ("sharded", "model-00002-of-00002.safetensors")):
        broken = tmp_path / source
        shutil.copytree(ckpts[source], broken)
        data = (broken / victim).read_bytes()
        (broken / victim).write_bytes(data[:-100])
        with pytest.raises(TrtcasError, match=f"{victim}.*truncated"):
            convert_rank(broken, ConvertSpec(), 0)


def _edit_header(path, edit):
    data = path.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + length])
    edit(header)
    text = json.dumps(header).encode()
    text += b" " * (length - len(text)) if len(text) <= length else b""
    path.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + length:])


@pytest.mark.parametrize(("edit", "message"), [
    (lambda h: h["lm_head.weight"].update(data_offsets=["a", "b"]), "malformed header entry for tensor 'lm_head.weight'"),
    (lambda h: h["lm_head.weight"].update(data_offsets=[0.5, 2.5]), "malformed header entry for tensor 'lm_head.weight'"),
    (lambda h: h["lm_head.weight"].update(data_offsets=[100, 0]), r"data_offsets \[100, 0\], not an ascending pair"),
    (lambda h: h["lm_head.weight"].update(data_offsets=h["model.embed_tokens.weight"]["data_offsets"]),
     "'lm_head.weight' and 'model.embed_tokens.weight' overlap"),
], ids=["string-offsets", "float-offsets", "reversed", "overlap"])
def test_hand_edited_header_is_one_clear_error(ckpts, tmp_path, edit, message):
    broken = tmp_path / "edited"
    shutil.copytree(ckpts["base"], broken)
    _edit_header(broken / "model.safetensors", edit)
    with pytest.raises(TrtcasError, match=message) as caught:
        convert_rank(broken, ConvertSpec(), 0)
    assert "model.safetensors" in str(caught.value) and "\n" not in str(caught.value)


def test_index_whose_weight_map_is_not_a_mapping_is_one_clear_error(ckpts, tmp_path):
    broken = tmp_path / "index"
    shutil.copytree(ckpts["sharded"], broken)
    (broken / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": 5}))
    with pytest.raises(TrtcasError, match="weight_map must map tensor names to shard file names"):
        convert_rank(broken, ConvertSpec(), 0)


@pytest.mark.parametrize("where", ["../outside.safetensors", "/abs/outside.safetensors", ".hidden.safetensors"])
def test_an_index_may_name_only_shards_the_checkpoint_digest_covers(ckpts, tmp_path, where):
    """A shard outside the dir (or hidden, which the dir's digest skips) would be read
    without being in the convert's key: refused, so no change to it can go unseen."""
    broken = tmp_path / "ckpt"
    shutil.copytree(ckpts["sharded"], broken)
    index = json.loads((broken / "model.safetensors.index.json").read_text())
    moved = next(iter(index["weight_map"]))
    shard = broken / index["weight_map"][moved]
    target = (broken / where) if not where.startswith("/") else Path(where)
    if not where.startswith("/"):
        shutil.copy(shard, target)
    index["weight_map"] = {name: (where if name == moved else file) for name, file in index["weight_map"].items()}
    (broken / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(TrtcasError, match="is not a file inside the checkpoint dir"):
        convert_rank(broken, ConvertSpec(), 0)


def test_missing_tensor_is_reported_with_its_file(ckpts, tmp_path):
    broken = tmp_path / "missing"
    shutil.copytree(ckpts["base"], broken)
    tensors = load_file(broken / "model.safetensors")
    del tensors["model.layers.1.mlp.up_proj.weight"]
    (broken / "model.safetensors").write_bytes(encode_safetensors(tensors.items()))
    with pytest.raises(TrtcasError, match=r"'model\.layers\.1\.mlp\.up_proj\.weight'.*model\.safetensors"):
        convert_rank(broken, ConvertSpec(), 0)

    index_broken = tmp_path / "index"
    shutil.copytree(ckpts["sharded"], index_broken)
    index = json.loads((index_broken / "model.safetensors.index.json").read_text())
    index["weight_map"]["model.layers.0.extra.weight"] = "model-00001-of-00002.safetensors"
    (index_broken / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(TrtcasError, match=r"model-00001-of-00002\.safetensors.*'model\.layers\.0\.extra\.weight'"):
        convert_rank(index_broken, ConvertSpec(), 0)


def test_shape_disagreeing_with_config_is_reported(ckpts, tmp_path):
    broken = tmp_path / "shape"
    shutil.copytree(ckpts["base"], broken)
    config = json.loads((broken / "config.json").read_text())
    config["intermediate_size"] = 96
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(TrtcasError, match=r"'model\.layers\.0\.mlp\.gate_proj\.weight' has shape \(128, 64\)"):
        convert_rank(broken, ConvertSpec(), 0)


def _config_only(tmp_path, **changes):
    """A directory with only a config.json: every config-level check fires before tensors are opened."""
    config = tiny.hf_config("float16", dict(tiny.TINY), False)
    for key, value in changes.items():
        if value is None:
            config.pop(key)
        else:
            config[key] = value
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


@pytest.mark.parametrize(
    ("changes", "spec", "message"),
    [
        ({"rms_norm_eps": None}, ConvertSpec(), "lacks 'rms_norm_eps'"),
        ({}, ConvertSpec(tp=3), "tp=3 does not divide num_attention_heads=8"),
        ({"num_attention_heads": 12, "num_key_value_heads": 6, "hidden_size": 96}, ConvertSpec(tp=4),
         "neither divides num_key_value_heads=6"),
        ({"intermediate_size": 100}, ConvertSpec(tp=8), "does not divide intermediate_size=100"),
        ({"vocab_size": 250}, ConvertSpec(tp=4, vocab_parallel=True), "does not divide vocab_size=250"),
        ({"num_hidden_layers": 3}, ConvertSpec(pp=2), "pp=2 does not divide num_hidden_layers=3"),
        ({"torch_dtype": "float8"}, ConvertSpec(), "unknown torch_dtype 'float8'"),
        ({"hidden_act": "gelu"}, ConvertSpec(), "not silu"),
        ({}, ConvertSpec(tp=2), "rank 2 is outside 0..1"),
    ],
)
def test_config_errors_are_one_line(tmp_path, changes, spec, message):
    directory = _config_only(tmp_path, **changes)
    rank = 2 if message.startswith("rank") else 0
    with pytest.raises(TrtcasError, match=message) as caught:
        convert_rank(directory, spec, rank)
    assert "\n" not in str(caught.value)


def test_spec_rejects_unknown_dtype_and_quantization():
    with pytest.raises(TrtcasError, match="unknown dtype 'fp8'"):
        ConvertSpec(dtype="fp8")
    with pytest.raises(TrtcasError, match="unsupported quantization 'W4A16'"):
        ConvertSpec(quantization="W4A16")
    with pytest.raises(TrtcasError, match="tp must be a positive integer"):
        ConvertSpec(tp=0)


def test_missing_checkpoint_files(tmp_path):
    with pytest.raises(TrtcasError, match="no HF config.json"):
        convert_rank(tmp_path, ConvertSpec(), 0)
    with pytest.raises(TrtcasError, match="no model.safetensors or model.safetensors.index.json"):
        convert_rank(_config_only(tmp_path), ConvertSpec(), 0)


def test_finetuning_one_layer_changes_only_that_layers_tensors(ckpts):
    for spec in (ConvertSpec(tp=2), ConvertSpec(tp=2, pp=2, quantization="W8A16")):
        for rank in range(spec.world_size):
            before, after = convert_rank(ckpts["base"], spec, rank), convert_rank(ckpts["finetuned"], spec, rank)
            assert list(before) == list(after)
            changed = {name for name in before if before[name].tobytes() != after[name].tobytes()}
            local = "transformer.layers.0." if spec.pp == 2 else "transformer.layers.1."
            holds_layer_1 = spec.pp == 1 or rank // spec.tp == 1
            assert changed == ({n for n in before if n.startswith(local)} if holds_layer_1 else set()), (spec, rank)


def test_plan_names_the_tensors_in_file_order(ckpts):
    hf_config = read_hf_config(ckpts["base"])
    spec = ConvertSpec(tp=2, quantization="W8A16")
    steps = plan_rank(hf_config, spec, 1)
    planned = [(o.name, o.shape) for step in steps for o in step.outputs]
    produced = [(name, array.shape) for name, array in iter_rank_tensors(ckpts["base"], spec, 1)]
    assert planned == produced
    qkv = next(step for step in steps if step.op == "qkv")
    assert qkv.sources == tuple(f"model.layers.0.self_attn.{p}_proj.weight" for p in "qkv")


def test_trtllm_config_fields(ckpts):
    config = trtllm_config(read_hf_config(ckpts["base"]), ConvertSpec(tp=2, pp=2, dtype="bfloat16"))
    assert config["architecture"] == "LlamaForCausalLM" and config["dtype"] == "bfloat16"
    assert config["mapping"] == {"world_size": 4, "tp_size": 2, "pp_size": 2}
    assert config["quantization"] == {"quant_algo": None, "kv_cache_quant_algo": None}
    assert (config["num_attention_heads"], config["num_key_value_heads"], config["head_size"]) == (8, 2, 8)
    assert config["position_embedding_type"] == "rope_gpt_neox" and config["hidden_act"] == "silu"
    assert (config["norm_epsilon"], config["rotary_base"]) == (1e-5, 10000.0)


def test_write_checkpoint_is_complete_and_deterministic(ckpts, tmp_path):
    spec = ConvertSpec(tp=2, dtype="bfloat16", quantization="W8A16")
    first = write_checkpoint(ckpts["sharded"], spec, tmp_path / "a")
    write_checkpoint(ckpts["sharded"], spec, tmp_path / "b")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["config.json", "rank0.safetensors", "rank1.safetensors"]
    assert [p.name for p in first][-1] == "config.json"
    for path in first:
        assert path.read_bytes() == (tmp_path / "b" / path.name).read_bytes()
    assert json.loads((tmp_path / "a" / "config.json").read_text()) == trtllm_config(read_hf_config(ckpts["base"]), spec)
    for rank in range(2):
        path = tmp_path / "a" / f"rank{rank}.safetensors"
        layout, data = read_safetensors_layout(path), path.read_bytes()
        assert layout.metadata == {"format": "pt"}
        expected = convert_rank(ckpts["base"], spec, rank)
        assert set(layout.tensors) == set(expected)
        for name, (dtype, shape, begin, end) in layout.tensors.items():
            assert (dtype, shape) == ({"int8": "I8", "bfloat16": "BF16"}[expected[name].dtype.name], expected[name].shape)
            assert data[begin:end] == expected[name].tobytes(), name
    float16 = write_checkpoint(ckpts["base"], ConvertSpec(tp=2), tmp_path / "c")
    loaded = load_file(float16[1])
    for name, array in convert_rank(ckpts["base"], ConvertSpec(tp=2), 1).items():
        np.testing.assert_array_equal(loaded[name], array)


def test_example_cli_writes_a_sharded_finetuned_checkpoint(tmp_path):
    tiny.main([str(tmp_path / "cli"), "--seed", "3", "--dtype", "bfloat16", "--shards", "2", "--finetune-layer", "0"])
    index = json.loads((tmp_path / "cli" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}
    assert read_hf_config(tmp_path / "cli")["torch_dtype"] == "bfloat16"
    assert len(convert_rank(tmp_path / "cli", ConvertSpec(tp=2), 0)) == 1 + 2 * 7 + 2
