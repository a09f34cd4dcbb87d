"""The canonical network's values: what a layer, tensor and weight reference are once read.

Also the constants that fix the canonical form (bump CANONICAL_VERSION when it changes, so
old and new digests never collide).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import onnx
from onnx import AttributeProto, TensorProto

from trtcas.cas.digest import Digest
from trtcas.cas.manifest import TensorManifest
from trtcas.errors import TrtcasError

# Bump when the canonical form changes, so old and new digests never collide.
CANONICAL_VERSION = 1
TRT_DOMAIN = "trt"
# Fixed, not onnx.IR_VERSION: the digest must not depend on the installed onnx package.
IR_VERSION = 10
DEFAULT_DOMAIN_OPSET = 21
PRODUCER_NAME = "trtcas-canonical"

# Properties that never shape the plan. `name`/`metadata` are cosmetic; `builder` and
# `error_recorder` (network) are handles, not structure. `type`, `num_inputs` and
# `num_outputs` of the base ILayer are recorded as the op type and the node's edges.
COSMETIC = frozenset({"name", "metadata", "builder", "error_recorder"})
# Tensor properties written as the value_info type rather than as metadata.
TENSOR_TYPED = frozenset({"dtype", "shape"})

# Properties whose getter logs an API-usage error (and returns a meaningless value) when an
# input tensor supplies the value instead: (op type, property) -> that input's slot. The
# tensor is recorded as an edge; the property is not read.
SUPPLIED_BY_INPUT = {
    ("SHUFFLE", "reshape_dims"): 1,
    ("SLICE", "start"): 1,
    ("SLICE", "shape"): 2,
    ("SLICE", "stride"): 3,
    ("SLICE", "axes"): 5,
    ("RESIZE", "shape"): 1,
    ("RESIZE", "scales"): 1,
    ("FILL", "shape"): 0,
    ("FILL", "alpha"): 1,
    ("FILL", "beta"): 2,
}
# Properties of owner objects that log an error unless another property is set first:
# IAttention's quantize-to type is only defined once a normalization quantize scale is.
REQUIRES = {"normalization_quantize_to_type": "normalization_quantize_scale"}

# Layer-class properties whose values are weights, and the WeightsRole each one is refit by.
ROLE_OF_PROPERTY = {"kernel": "KERNEL", "bias": "BIAS", "shift": "SHIFT", "scale": "SCALE", "weights": "CONSTANT"}

# LayerType members whose class name is not the member name with underscores removed.
CLASS_ALIASES = {"CONDITIONAL_INPUT": "IIfConditionalInputLayer", "CONDITIONAL_OUTPUT": "IIfConditionalOutputLayer"}

TRT_TO_ONNX_DTYPE = {
    "FLOAT": TensorProto.FLOAT,
    "HALF": TensorProto.FLOAT16,
    "BF16": TensorProto.BFLOAT16,
    "INT8": TensorProto.INT8,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "BOOL": TensorProto.BOOL,
    "UINT8": TensorProto.UINT8,
    "FP8": TensorProto.FLOAT8E4M3FN,
    "INT4": TensorProto.INT4,
    "FP4": getattr(TensorProto, "FLOAT4E2M1", TensorProto.UNDEFINED),
    "E8M0": getattr(TensorProto, "FLOAT8E8M0", TensorProto.UNDEFINED),
}
# numpy dtype names for TensorRT dtypes that numpy has no type for (weights stay unreadable
# through the TensorRT API; their bytes come from the source ONNX model).
TRT_DTYPE_NAME = {"BF16": "bfloat16", "FP8": "float8_e4m3fn", "INT4": "int4", "FP4": "float4_e2m1", "E8M0": "float8_e8m0"}


class CanonicalizeError(TrtcasError):
    """A network or profile that cannot be put in canonical form."""


# ---------------------------------------------------------------------------------------
# Values


@dataclass(frozen=True)
class CanonicalNetwork:
    """A network's canonical model, its two digests, and what a refit needs.

    ``weight_values`` hold arrays that own their memory (unless canonicalized with
    ``copy_weights=False``), shaped as in the manifest.
    ``refit_names`` maps a structural weight name (``L3.kernel``) to the TensorRT weights
    name ``Refitter.set_named_weights`` takes, where that name is known (ONNX initializer
    names, constant layer names); ``refit_layer_roles`` maps every non-constant weight to
    the (layer name, WeightsRole name) pair ``Refitter.set_weights`` takes.
    """

    model: onnx.ModelProto
    structural_digest: Digest
    full_digest: Digest
    weights: TensorManifest
    refit_names: dict
    weight_values: dict
    refit_layer_roles: dict = field(default_factory=dict)
    # canonical node name (``L5``) -> the TensorRT layer's name (for ONNX: the node's), for
    # explain; never part of a digest.
    layer_names: dict = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return serialize(self.model)

    def structural_model(self) -> onnx.ModelProto:
        """The model the structural digest is taken over (weight digests removed)."""
        return strip_weight_digests(self.model)


@dataclass(frozen=True)
class WeightRef:
    """A weights-valued property, read once and hashed once."""

    prop: str
    dtype: str
    shape: tuple[int, ...]
    digest: Digest
    value: Any  # np.ndarray, or None for an empty Weights
    refit_name: str | None
    refittable: bool


@dataclass(frozen=True)
class TensorRef:
    """A property whose value is a tensor (e.g. an attention mask): an edge, not a name."""

    key: str


@dataclass(frozen=True)
class OwnerRef:
    """A loop, conditional or attention a boundary layer belongs to; ``group`` only tells
    owners apart internally (it follows insertion order and never reaches the model: the
    emitted ids ``loop0, loop1, ...`` follow canonical order)."""

    kind: str
    group: int


@dataclass(frozen=True)
class Tensor:
    dtype: str
    shape: tuple[int, ...]
    dim_names: tuple[str | None, ...]
    props: tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class Layer:
    index: int  # insertion index: only the last tie-breaker, and for error messages
    name: str  # TensorRT layer name: refit lookups only, never emitted
    op: str
    attrs: tuple[tuple[str, Any], ...]
    inputs: tuple[str | None, ...]  # internal tensor keys (TensorRT names)
    outputs: tuple[str, ...]
    back_edges: frozenset[int]  # input slots that close a loop (recurrence values)


@dataclass(frozen=True)
class Network:
    layers: tuple[Layer, ...]
    tensors: dict  # key -> Tensor
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    flags: tuple[str, ...]


def serialize(model: onnx.ModelProto) -> bytes:
    return model.SerializeToString(deterministic=True)


def strip_weight_digests(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of a canonical model with weight digests removed: what the structural digest
    covers, so that weight values (only) can change under it."""
    stripped = onnx.ModelProto()
    stripped.CopyFrom(model)
    for node in stripped.graph.node:
        for attr in node.attribute:
            if attr.type == AttributeProto.TENSOR:
                kept = [(e.key, e.value) for e in attr.t.metadata_props if e.key != "digest"]
                del attr.t.metadata_props[:]
                for key, value in kept:
                    entry = attr.t.metadata_props.add()
                    entry.key, entry.value = key, value
    return stripped
