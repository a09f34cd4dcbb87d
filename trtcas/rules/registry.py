"""Registers the built-in rules and planners with the graph (importing no TensorRT)."""
