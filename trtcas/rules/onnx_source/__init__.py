"""ONNX targets: ``[model] onnx = "..."`` -> a parsed TensorRT network -> engines."""
