"""Registers the built-in rules and planners with the graph.

Importing this imports no TensorRT: rule modules import it inside their functions.
"""

import trtcas.rules.onnx_rules  # noqa: F401
import trtcas.rules.onnx_target  # noqa: F401
