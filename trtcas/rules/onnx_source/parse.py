"""ONNX file -> TensorRT network.

Parsing goes through ``OnnxParser.parse_from_file`` (not ``parse(bytes)``) so that models
with ONNX external data, whose tensors live in files next to the model, load; it is also
the only way past protobuf's 2 GB limit. Every failure a user can cause (wrong path,
corrupt file, an operator the flavour cannot build) becomes a one-line
:class:`TrtcasError` naming the file, the node and what to do.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from trtcas.errors import TrtcasError
from trtcas.rules.messages import last_error, tidy_message
from trtcas.rules.trt.backend import Backend
from trtcas.rules.trt.native_stderr import native_stderr_to
from trtcas.rules.trt.network import ParsedNetwork


def parse_onnx(backend: Backend, onnx_path: str | os.PathLike, log_severity: str = "info") -> ParsedNetwork:
    """Parse an ONNX file into a network for ``backend``; raise one clear line on failure."""
    path = Path(onnx_path)
    _check_readable(path)
    trt = backend.trt
    logger = backend.logger(log_severity)
    builder = trt.Builder(logger)
    if builder is None:
        raise TrtcasError(f"{backend.flavour} {backend.version} could not create a builder: "
                          f"{last_error(logger.errors()) or 'no reason logged'}")
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    with native_stderr_to(logger.native):  # the parser prints some complaints to fd 2 itself
        parsed = parser.parse_from_file(str(path))
    if not parsed:
        raise TrtcasError(_parser_failure(backend, path, parser))
    if network.num_outputs == 0:
        # The parser accepts bytes that decode to an empty protobuf (garbage, an empty file)
        raise TrtcasError(f"{path} is not a valid ONNX model ({_onnx_decode_problem(path)}); "
                          "re-export it or point the target at the right file")
    return ParsedNetwork(backend=backend, source=str(path), parser=parser, network=network,
                         builder=builder, logger=logger)


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise TrtcasError(f"ONNX model not found: {path}; check the path in the target")
    if not path.is_file():
        raise TrtcasError(f"ONNX model path {path} is not a regular file; point the target at the .onnx file")
    try:
        with path.open("rb") as fh:
            first = fh.read(1)
    except OSError as exc:
        raise TrtcasError(f"cannot read ONNX model {path}: {exc.strerror or exc}; fix its permissions") from None
    if not first:
        raise TrtcasError(f"ONNX model {path} is empty (0 bytes); re-export it")


def _parser_failure(backend: Backend, path: Path, parser: Any) -> str:
    """The first parser error as one line: file, node (name and op), description, hint."""
    err = parser.get_error(0)
    where = ""
    if err.node() >= 0 or err.node_name():
        where = f" at node {err.node_name() or '#' + str(err.node())!r} (op {err.node_operator() or '?'})"
    desc = tidy_message(err.desc())
    more = f" (+{parser.num_errors - 1} more errors)" if parser.num_errors > 1 else ""
    if "Failed to import initializer" in desc:
        problem = _initializer_problem(path)
        hint = (f"{problem}; restore the data file or re-export the model" if problem else
                "if the model keeps its weights in external data files, put them next to it")
    elif "Plugin not found" in desc or str(err.code()).endswith("UNSUPPORTED_NODE"):
        hint = (f"operator {err.node_operator() or '?'} is not supported by {backend.flavour} {backend.version}; "
                "replace it in the export or provide a plugin")
    else:
        hint = "fix the model (e.g. re-export it) and rebuild"
    return f"cannot parse ONNX model {path}{where}: {desc}{more}; {hint}"


def _initializer_problem(path: Path) -> str | None:
    """The first initializer whose bytes do not fit its dims or its external data file (a
    truncated ``.data`` file, a hand-edited shape); None when all look whole. Only called on
    the failure path, where the parser said no more than "failed to import initializer"."""
    try:
        import onnx
        from onnx import external_data_helper, helper

        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - undecodable: the parser's own message stands
        return None
    for tensor in model.graph.initializer:
        need = _tensor_bytes(tensor, helper)
        if external_data_helper.uses_external_data(tensor):
            info = external_data_helper.ExternalDataInfo(tensor)
            data = path.parent / info.location
            if not data.is_file():
                return f"initializer {tensor.name!r} reads {data}, which does not exist"
            size, start = data.stat().st_size, info.offset or 0
            length = info.length or (size - start)
            if start + length > size:
                return f"initializer {tensor.name!r} reads bytes {start}-{start + length} of {data}, which holds {size} (truncated?)"
            have = length
        else:
            have = len(tensor.raw_data) if tensor.HasField("raw_data") else None
        if need is not None and have is not None and have != need:
            return f"initializer {tensor.name!r} has {have} bytes but its dims {list(tensor.dims)} need {need}"
    return None


def _tensor_bytes(tensor, helper) -> int | None:
    """Bytes of an initializer's dims in its type; None for strings and sub-byte types."""
    try:
        itemsize = helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except (KeyError, TypeError, ValueError):
        return None
    if itemsize == 0 or tensor.data_type in _NOT_WHOLE_BYTES:
        return None
    count = 1
    for dim in tensor.dims:
        count *= dim
    return count * itemsize


_NOT_WHOLE_BYTES = frozenset({8, 21, 22, 23, 25, 26})  # STRING, UINT4, INT4, FLOAT4E2M1, UINT2, INT2 (TensorProto)


def _onnx_decode_problem(path: Path) -> str:
    """Why the onnx package rejects the file; only called on the failure path."""
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 (any decode failure is the answer we want)
        return tidy_message(f"{type(exc).__name__}: {exc}")
    if not model.graph.output:
        return "it has no graph outputs"
    return "TensorRT found no outputs in it"

