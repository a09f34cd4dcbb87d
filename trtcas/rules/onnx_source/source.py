"""The ``onnx`` network source: the action's ``onnx`` input parsed by TensorRT's ONNX parser."""

from __future__ import annotations

from typing import Any

from trtcas.rules.trt.sources import LoadedNetwork, profiles_by_name


def load_onnx_network(ctx: Any, toolchain: Any) -> LoadedNetwork:
    import onnx

    from trtcas.rules.onnx_source.parse import parse_onnx

    path = ctx.input_path("onnx")
    return LoadedNetwork(parse_onnx(toolchain.backend, path), onnx.load(str(path)),
                         profiles_by_name(ctx.params.get("profiles", [])))
