"""Write two small, static-shaped ONNX models for trying and testing trtcas.

    python examples/make_models.py OUTDIR [--seed N] [--weights-seed N]

- ``conv_block.onnx``: Conv -> BatchNormalization -> Relu -> Conv -> residual Add -> Relu
  -> GlobalAveragePool -> Flatten -> Gemm (an image classifier head).
- ``transformer_block.onnx``: pre-norm self-attention (LayerNormalization, q/k/v MatMuls,
  Reshape/Transpose into heads, scaled Softmax attention, output projection, residual)
  followed by a LayerNorm + MLP (Gelu or Relu) with a residual.

Two seeds, because the cache treats structure and weight values differently: ``--seed``
picks the structure (widths, head count, activation), ``--weights-seed`` (default: the
value of ``--seed``) picks only the weight values. Changing only ``--weights-seed`` must
leave the structural digest alone and change every weight, which is exactly the
"fine-tune" case the refit path exists for. The same seeds always give the same bytes.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 20  # Gelu entered the default domain in opset 20


@dataclass(frozen=True)
class ConvShape:
    """Structure of the conv block; drawn from ``--seed``."""

    batch: int
    in_channels: int
    size: int
    channels: int
    classes: int


@dataclass(frozen=True)
class TransformerShape:
    """Structure of the transformer block; drawn from ``--seed``."""

    batch: int
    seq: int
    d_model: int
    heads: int
    mlp_ratio: int
    activation: str  # "Gelu" or "Relu"


def conv_shape(seed: int) -> ConvShape:
    rng = np.random.default_rng([seed, 1])
    return ConvShape(batch=1, in_channels=3, size=int(rng.choice([16, 32])),
                     channels=int(rng.choice([8, 16])), classes=10)


def transformer_shape(seed: int) -> TransformerShape:
    rng = np.random.default_rng([seed, 2])
    return TransformerShape(batch=1, seq=int(rng.choice([8, 16])), d_model=int(rng.choice([32, 64])),
                            heads=int(rng.choice([2, 4])), mlp_ratio=int(rng.choice([2, 4])),
                            activation=str(rng.choice(["Gelu", "Relu"])))


class _Weights:
    """Seeded initializer factory: one generator, drawn in a fixed order, so equal seeds
    give equal bytes and the draw order never depends on anything but the structure."""

    def __init__(self, seed: int):
        self._rng = np.random.default_rng([seed, 99])
        self.initializers: list[onnx.TensorProto] = []

    def normal(self, name: str, shape: tuple[int, ...], scale: float) -> str:
        array = (self._rng.standard_normal(shape) * scale).astype(np.float32)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def positive(self, name: str, shape: tuple[int, ...]) -> str:
        array = self._rng.uniform(0.5, 1.5, shape).astype(np.float32)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def const(self, name: str, array: np.ndarray) -> str:
        """A structural constant (shapes, scales): not drawn from the weight generator."""
        self.initializers.append(numpy_helper.from_array(array, name))
        return name


def make_conv_block(seed: int = 0, weights_seed: int | None = None) -> onnx.ModelProto:
    s = conv_shape(seed)
    w = _Weights(seed if weights_seed is None else weights_seed)
    c = s.channels
    node = helper.make_node
    nodes = [
        node("Conv", ["image", w.normal("conv1.weight", (c, s.in_channels, 3, 3), 0.2),
                      w.normal("conv1.bias", (c,), 0.1)], ["conv1"], name="conv1", pads=[1, 1, 1, 1]),
        node("BatchNormalization", ["conv1", w.positive("bn1.scale", (c,)), w.normal("bn1.bias", (c,), 0.1),
                                    w.normal("bn1.mean", (c,), 0.1), w.positive("bn1.var", (c,))],
             ["bn1"], name="bn1", epsilon=1e-5),
        node("Relu", ["bn1"], ["relu1"], name="relu1"),
        node("Conv", ["relu1", w.normal("conv2.weight", (c, c, 3, 3), 0.1), w.normal("conv2.bias", (c,), 0.1)],
             ["conv2"], name="conv2", pads=[1, 1, 1, 1]),
        node("Add", ["conv2", "relu1"], ["residual"], name="residual"),
        node("Relu", ["residual"], ["relu2"], name="relu2"),
        node("GlobalAveragePool", ["relu2"], ["pooled"], name="pool"),
        node("Flatten", ["pooled"], ["flat"], name="flatten", axis=1),
        node("Gemm", ["flat", w.normal("fc.weight", (s.classes, c), 0.2), w.normal("fc.bias", (s.classes,), 0.1)],
             ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "conv_block",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [s.batch, s.in_channels, s.size, s.size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [s.batch, s.classes])],
        w.initializers)
    return _model(graph)


def make_transformer_block(seed: int = 0, weights_seed: int | None = None) -> onnx.ModelProto:
    s = transformer_shape(seed)
    w = _Weights(seed if weights_seed is None else weights_seed)
    d, h = s.d_model, s.heads
    hd = d // h
    hidden = d * s.mlp_ratio
    node = helper.make_node
    heads_shape = w.const("heads_shape", np.array([s.batch, s.seq, h, hd], dtype=np.int64))
    model_shape = w.const("model_shape", np.array([s.batch, s.seq, d], dtype=np.int64))
    scale = w.const("attn_scale", np.array(1.0 / np.sqrt(hd), dtype=np.float32))

    nodes = [node("LayerNormalization", ["x", w.positive("ln1.weight", (d,)), w.normal("ln1.bias", (d,), 0.1)],
                  ["ln1"], name="ln1", axis=-1, epsilon=1e-5)]
    for p in ("q", "k", "v"):
        nodes += [
            node("MatMul", ["ln1", w.normal(f"attn.{p}.weight", (d, d), d ** -0.5)], [f"{p}_mm"], name=f"{p}_proj"),
            node("Add", [f"{p}_mm", w.normal(f"attn.{p}.bias", (d,), 0.02)], [f"{p}_lin"], name=f"{p}_bias"),
            node("Reshape", [f"{p}_lin", heads_shape], [f"{p}_split"], name=f"{p}_split_heads"),
            # q, v -> (b, h, s, hd); k -> (b, h, hd, s) so q @ k is the score matrix
            node("Transpose", [f"{p}_split"], [f"{p}_heads"], name=f"{p}_transpose",
                 perm=[0, 2, 3, 1] if p == "k" else [0, 2, 1, 3]),
        ]
    nodes += [
        node("MatMul", ["q_heads", "k_heads"], ["scores_raw"], name="scores"),
        node("Mul", ["scores_raw", scale], ["scores_scaled"], name="scale"),
        node("Softmax", ["scores_scaled"], ["probs"], name="softmax", axis=-1),
        node("MatMul", ["probs", "v_heads"], ["ctx_heads"], name="context"),
        node("Transpose", ["ctx_heads"], ["ctx_t"], name="merge_transpose", perm=[0, 2, 1, 3]),
        node("Reshape", ["ctx_t", model_shape], ["ctx"], name="merge_heads"),
        node("MatMul", ["ctx", w.normal("attn.out.weight", (d, d), d ** -0.5)], ["out_mm"], name="out_proj"),
        node("Add", ["out_mm", w.normal("attn.out.bias", (d,), 0.02)], ["attn_out"], name="out_bias"),
        node("Add", ["x", "attn_out"], ["resid1"], name="resid1"),
        node("LayerNormalization", ["resid1", w.positive("ln2.weight", (d,)), w.normal("ln2.bias", (d,), 0.1)],
             ["ln2"], name="ln2", axis=-1, epsilon=1e-5),
        node("MatMul", ["ln2", w.normal("mlp.fc1.weight", (d, hidden), d ** -0.5)], ["fc1_mm"], name="fc1"),
        node("Add", ["fc1_mm", w.normal("mlp.fc1.bias", (hidden,), 0.02)], ["fc1_out"], name="fc1_bias"),
        node(s.activation, ["fc1_out"], ["act"], name="act"),
        node("MatMul", ["act", w.normal("mlp.fc2.weight", (hidden, d), hidden ** -0.5)], ["fc2_mm"], name="fc2"),
        node("Add", ["fc2_mm", w.normal("mlp.fc2.bias", (d,), 0.02)], ["mlp_out"], name="fc2_bias"),
        node("Add", ["resid1", "mlp_out"], ["y"], name="resid2"),
    ]
    graph = helper.make_graph(
        nodes, "transformer_block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [s.batch, s.seq, d])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [s.batch, s.seq, d])],
        w.initializers)
    return _model(graph)


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="trtcas-examples")
    model.ir_version = 9  # pinned so the bytes do not depend on the installed onnx version
    onnx.checker.check_model(model, full_check=True)
    return model


MODELS = {"conv_block": make_conv_block, "transformer_block": make_transformer_block}


def write_models(outdir: str | Path, seed: int = 0, weights_seed: int | None = None) -> dict[str, Path]:
    """Write every example model into ``outdir``; return name -> path."""
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, make in MODELS.items():
        path = out / f"{name}.onnx"
        path.write_bytes(make(seed, weights_seed).SerializeToString())
        paths[name] = path
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir")
    ap.add_argument("--seed", type=int, default=0, help="structure seed (widths, heads, activation)")
    ap.add_argument("--weights-seed", type=int, default=None, help="weight-value seed (default: --seed)")
    args = ap.parse_args(argv)
    for name, path in write_models(args.outdir, args.seed, args.weights_seed).items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
