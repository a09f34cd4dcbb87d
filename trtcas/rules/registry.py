"""Registers the built-in rules and planners with the graph.

Importing this imports no TensorRT: rule modules import it inside their functions.
"""

import trtcas.rules.trt_rules  # noqa: F401
import trtcas.rules.onnx_target  # noqa: F401
import trtcas.rules.llm_target  # noqa: F401
