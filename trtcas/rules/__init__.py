"""The TensorRT knowledge. TensorRT itself is imported lazily, inside functions."""
