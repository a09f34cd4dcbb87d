"""ONNX models whose engine build takes seconds on the CPU (for cancel and progress tests)."""

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def deep_mlp(path: Path, depth: int = 300, width: int = 64, seed: int = 0) -> Path:
    """MatMul+Relu x ``depth``: TensorRT-RTX spends seconds compiling it for one SM on a CPU."""
    rng = np.random.default_rng(seed)
    nodes, weights, prev = [], [], "x"
    for i in range(depth):
        weights.append(numpy_helper.from_array((rng.standard_normal((width, width)) * 0.05).astype(np.float32), f"w{i}"))
        nodes += [helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"], name=f"matmul{i}"),
                  helper.make_node("Relu", [f"m{i}"], [f"r{i}"], name=f"relu{i}")]
        prev = f"r{i}"
    graph = helper.make_graph(nodes, "deep_mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, width])], weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path
