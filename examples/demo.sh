#!/usr/bin/env bash
# `make demo`: build a real TensorRT-RTX engine twice (the second run is all cache hits),
# then after a weight-only change and after a cosmetic rename, and ask trtcas why things
# re-ran. Everything happens in .demo/ with its own cache.
set -euo pipefail
cd "$(dirname "$0")/.."
export TRTCAS_CACHE_DIR="$PWD/.demo/cache"
rm -rf .demo && mkdir -p .demo
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
models() { python examples/make_models.py .demo/models "$@" >/dev/null; }

cp -r examples/conv .demo/conv
models --seed 0
cp .demo/models/conv_block.onnx .demo/conv/model.onnx
cd .demo/conv

step trtcas graph
step trtcas build                       # cold: parse, canonicalize, build the engine
step trtcas build                       # no-op: every action is a cache hit
step trtcas status                      # per action: up to date, or would run and why
ls -l out/engines/rank0.engine

python ../../examples/make_models.py ../models --seed 0 --weights-seed 1 >/dev/null
cp ../models/conv_block.onnx model.onnx
echo; echo "# fine-tune: same structure, new weights"
step trtcas status
step trtcas build
step trtcas explain engine[rank0]

python - <<'PY'
import onnx
m = onnx.load("model.onnx")
for i, node in enumerate(m.graph.node):
    node.name = f"renamed_{i}"
    node.doc_string = "renamed by the demo"
m.producer_name = "somebody-else"
onnx.save(m, "model.onnx")
PY
echo; echo "# cosmetic change: node names, doc strings, producer"
step trtcas build
step trtcas explain

step trtcas build --set engine.optimization_level=5     # any target-file value is also a flag
step trtcas explain --json
step trtcas log 'engine[rank0]'          # TensorRT's builder log of that build
step trtcas cache stats

# ---- a network that takes a few seconds to build: the progress bar ------------------------
cd ../..
mkdir -p .demo/deep && cp examples/conv/trtcas.toml .demo/deep/ && sed -i 's/name = "conv"/name = "deep"/' .demo/deep/trtcas.toml
python - <<'PY'
import numpy as np, onnx
from onnx import TensorProto, helper, numpy_helper
rng, nodes, weights, prev = np.random.default_rng(0), [], [], "x"
for i in range(400):  # MatMul + Relu x 400
    weights.append(numpy_helper.from_array((rng.standard_normal((64, 64)) * 0.05).astype(np.float32), f"w{i}"))
    nodes += [helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"], name=f"matmul{i}"),
              helper.make_node("Relu", [f"m{i}"], [f"r{i}"], name=f"relu{i}")]
    prev = f"r{i}"
graph = helper.make_graph(nodes, "deep", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                          [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, 64])], weights)
onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), ".demo/deep/model.onnx")
PY
cd .demo/deep
step trtcas build                       # on a terminal: N/M counter and TensorRT's phases as a bar
step trtcas status

# ---- an LLM with tensor parallelism 2 -------------------------------------------------------
cd ../..
cp -r examples/llm .demo/llm
python examples/make_tiny_llama.py .demo/llm/hf --seed 0 >/dev/null
cd .demo/llm
step trtcas graph
step trtcas build                       # convert per rank, write each rank's decoder, build engines
ls -l out/checkpoint out/engines
step trtcas explain engine[rank1]       # why rank 1 did not share rank 0's engine here
rm -rf hf && python ../../examples/make_tiny_llama.py hf --seed 0 --finetune-layer 1 >/dev/null
echo; echo "# fine-tune of layer 1"
step trtcas build
step trtcas cache stats
