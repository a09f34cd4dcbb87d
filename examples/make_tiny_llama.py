"""Write a tiny random Llama-style HF checkpoint, for tests and demos of the converter.

2 layers, hidden 64, 8 heads with 2 KV heads (GQA), intermediate 128, vocab 256, drawn from a
seeded numpy generator, stored as float16 or bfloat16 in ``model.safetensors`` or in N shards
with a ``model.safetensors.index.json`` (HF's layout). ``--finetune-layer N`` adds noise to
layer N's tensors only, drawn from a generator of its own, so every other tensor is
byte-identical to the checkpoint without it: the situation a build cache must exploit.

    python examples/make_tiny_llama.py OUTDIR [--seed 0] [--dtype float16|bfloat16]
                                              [--shards 2] [--finetune-layer N]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import ml_dtypes
import numpy as np

from trtcas.cas.atomic import atomic_write_bytes
from trtcas.rules.formats.safetensors import encode as encode_safetensors

TINY = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "num_hidden_layers": 2,
    "vocab_size": 256,
}
_DTYPES = {"float16": np.dtype(np.float16), "bfloat16": np.dtype(ml_dtypes.bfloat16)}


def hf_config(dtype: str, sizes: dict, tie_word_embeddings: bool) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_act": "silu",
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "max_position_embeddings": 128,
        "tie_word_embeddings": tie_word_embeddings,
        "attention_bias": False,
        "mlp_bias": False,
        "torch_dtype": dtype,
        **sizes,
    }


def tensor_shapes(sizes: dict, tie_word_embeddings: bool) -> list[tuple[str, tuple[int, ...]]]:
    """HF names and shapes in a fixed order (the order random draws are taken in)."""
    hidden, inter, vocab = sizes["hidden_size"], sizes["intermediate_size"], sizes["vocab_size"]
    head_dim = hidden // sizes["num_attention_heads"]
    q_rows, kv_rows = sizes["num_attention_heads"] * head_dim, sizes["num_key_value_heads"] * head_dim
    shapes = [("model.embed_tokens.weight", (vocab, hidden))]
    for i in range(sizes["num_hidden_layers"]):
        p = f"model.layers.{i}"
        shapes += [
            (f"{p}.input_layernorm.weight", (hidden,)),
            (f"{p}.self_attn.q_proj.weight", (q_rows, hidden)),
            (f"{p}.self_attn.k_proj.weight", (kv_rows, hidden)),
            (f"{p}.self_attn.v_proj.weight", (kv_rows, hidden)),
            (f"{p}.self_attn.o_proj.weight", (hidden, q_rows)),
            (f"{p}.post_attention_layernorm.weight", (hidden,)),
            (f"{p}.mlp.gate_proj.weight", (inter, hidden)),
            (f"{p}.mlp.up_proj.weight", (inter, hidden)),
            (f"{p}.mlp.down_proj.weight", (hidden, inter)),
        ]
    shapes.append(("model.norm.weight", (hidden,)))
    if not tie_word_embeddings:
        shapes.append(("lm_head.weight", (vocab, hidden)))
    return shapes


def random_tensors(seed: int, sizes: dict, tie_word_embeddings: bool,
                   finetune_layer: int | None) -> dict[str, np.ndarray]:
    """float32 weights: norms near 1, matrices N(0, 0.05); layer ``finetune_layer`` nudged."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, shape in tensor_shapes(sizes, tie_word_embeddings):
        draw = rng.standard_normal(shape, dtype=np.float32)
        tensors[name] = (1 + 0.1 * draw) if name.endswith("norm.weight") else 0.05 * draw
    if finetune_layer is not None:
        if not 0 <= finetune_layer < sizes["num_hidden_layers"]:
            raise SystemExit(f"--finetune-layer {finetune_layer} is not a layer of a {sizes['num_hidden_layers']}-layer model")
        tune = np.random.default_rng([seed, 1, finetune_layer])
        prefix = f"model.layers.{finetune_layer}."
        for name in [n for n in tensors if n.startswith(prefix)]:
            tensors[name] = tensors[name] + 0.01 * tune.standard_normal(tensors[name].shape, dtype=np.float32)
    return tensors


def make_tiny_llama(out_dir: str | Path, seed: int = 0, dtype: str = "float16", shards: int = 1,
                    finetune_layer: int | None = None, tie_word_embeddings: bool = False,
                    **size_overrides: int) -> Path:
    """Write the checkpoint into ``out_dir`` and return it; ``size_overrides`` change TINY's sizes."""
    if dtype not in _DTYPES:
        raise SystemExit(f"--dtype {dtype!r}: use float16 or bfloat16")
    sizes = {**TINY, **size_overrides}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {name: values.astype(_DTYPES[dtype])
               for name, values in random_tensors(seed, sizes, tie_word_embeddings, finetune_layer).items()}
    names = list(tensors)
    if shards <= 1:
        atomic_write_bytes(out / "model.safetensors", encode_safetensors(tensors.items(), {"format": "pt"}))
    else:
        groups = np.array_split(np.arange(len(names)), shards)
        weight_map = {}
        for number, group in enumerate(groups, 1):
            file_name = f"model-{number:05d}-of-{shards:05d}.safetensors"
            part = [(names[i], tensors[names[i]]) for i in group]
            atomic_write_bytes(out / file_name, encode_safetensors(part, {"format": "pt"}))
            weight_map.update({name: file_name for name, _ in part})
        index = {"metadata": {"total_size": sum(t.nbytes for t in tensors.values())}, "weight_map": weight_map}
        atomic_write_bytes(out / "model.safetensors.index.json", (json.dumps(index, indent=2) + "\n").encode())
    config = hf_config(dtype, sizes, tie_word_embeddings)
    atomic_write_bytes(out / "config.json", (json.dumps(config, indent=2) + "\n").encode())
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=sorted(_DTYPES), default="float16")
    parser.add_argument("--shards", type=int, default=1, help="split the weights into this many files + an index")
    parser.add_argument("--finetune-layer", type=int, default=None, metavar="N",
                        help="perturb only layer N's weights (everything else stays byte-identical)")
    parser.add_argument("--tie-word-embeddings", action="store_true", help="no lm_head.weight; lm_head is embed_tokens")
    args = parser.parse_args(argv)
    path = make_tiny_llama(args.out_dir, args.seed, args.dtype, args.shards, args.finetune_layer,
                           args.tie_word_embeddings)
    print(path)


if __name__ == "__main__":
    main()
