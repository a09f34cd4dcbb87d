"""Weight names from the source ONNX model: the names a refit must use for each weight.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from trtcas.cas.digest import Digest


class OnnxHints:
    """Refit names (and bytes of dtypes numpy lacks) recovered from the ONNX model the
    network was parsed from. The ONNX parser names a constant layer after its initializer
    and a Conv layer after its node, so candidates are found by name and accepted only if
    their bytes are the weights' bytes."""

    def __init__(self, model: onnx.ModelProto | None):
        self.initializers = {t.name: t for t in model.graph.initializer} if model is not None else {}
        self.nodes = {}
        if model is not None:
            for node in model.graph.node:
                if node.name and node.name not in self.nodes:
                    self.nodes[node.name] = node
        self._arrays: dict = {}

    def array(self, name: str):
        if name not in self._arrays:
            if self.initializers[name].data_location == TensorProto.EXTERNAL:
                self._arrays[name] = None  # not loaded: never read files next to the cwd
                return None
            try:
                self._arrays[name] = numpy_helper.to_array(self.initializers[name])
            except Exception:  # noqa: BLE001 - external data not loaded, odd dtypes
                self._arrays[name] = None
        return self._arrays[name]

    def _candidates(self, layer_name: str, prop: str, layer_op: str) -> list:
        if prop == "weights" and layer_op == "CONSTANT":
            return [layer_name] if layer_name in self.initializers else []
        node = self.nodes.get(layer_name)
        if node is None:
            return []
        slot = {"kernel": 1, "bias": 2}.get(prop)
        if slot is not None and len(node.input) > slot and node.input[slot] in self.initializers:
            return [node.input[slot]]
        return [n for n in node.input if n in self.initializers]

    def refit_name(self, layer_name: str, prop: str, layer_op: str, flat: np.ndarray, digest: Digest):
        """(TensorRT weights name or None, the matching source array or None)."""
        for candidate in self._candidates(layer_name, prop, layer_op):
            source = self.array(candidate)
            if source is None:
                continue
            source_bytes = np.ascontiguousarray(source).reshape(-1).view(np.uint8)
            if source_bytes.size == digest.size and np.array_equal(source_bytes, flat.view(np.uint8)):
                return candidate, source
        if layer_op == "CONSTANT":
            return layer_name, None  # what the ONNX parser and most builders name constant weights
        return None, None

    def unreadable(self, layer_name: str, prop: str, layer_op: str, weights) -> np.ndarray | None:
        """The source array of weights whose dtype numpy lacks, matched by name and size."""
        for candidate in self._candidates(layer_name, prop, layer_op):
            source = self.array(candidate)
            if source is not None and source.size == int(weights.size) and source.nbytes == int(weights.nbytes):
                return source
        return None
