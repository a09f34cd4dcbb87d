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
