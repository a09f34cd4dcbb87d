"""Target files several test modules build."""

# The conv example target (examples/conv), with the backend left open.
CONV_TARGET = """
[target]
name = "conv"
[model]
onnx = "model.onnx"
[engine]
backend = "{backend}"
targets = ["sm86"]
optimization_level = 3
"""

# A tp=2 tiny Llama (examples/make_tiny_llama.py in ./hf) with an engine matrix of two SMs:
# per rank, engine[rankN,sm86] and engine[rankN,sm120].
LLM_MATRIX_TARGET = """
[target]
name = "llm"
[model]
hf = "hf"
dtype = "float32"
max_batch_size = 1
max_seq_len = 8
[parallel]
tp = 2
[engine]
backend = "tensorrt_rtx"
matrix = [{ targets = ["sm86"] }, { targets = ["sm120"] }]
"""
