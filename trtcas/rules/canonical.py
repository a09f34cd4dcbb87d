"""A TensorRT network as a canonical ONNX model, and the digests that key engine builds.

An engine key must change when anything that shapes the plan changes (op type, attribute,
shape, dtype, edge, profile) and must not change for cosmetic edits (names, doc strings,
node order among independent nodes, initializer order), or a fine-tune would rebuild an
engine it could refit. So the network is walked through the public TensorRT Python API
and re-emitted as an ONNX model in which:

- every layer is a node of domain ``trt`` whose op type is the layer type name and whose
  attributes are every readable public property of that layer class, sorted by name;
- layers are ordered depth-first from the network outputs (by output position, inputs by
  slot), an order that depends on structure alone; tensors are named ``t0, t1, ...``:
  network inputs by position, then layer outputs in that order. No TensorRT name reaches
  the model;
- weights are references (dtype, shape, digest, and a structural role such as ``L3.kernel``)
  so that the *structural* digest, which omits the weight digests, survives a weight-only
  change while the *full* digest does not.

What the public API does not expose is not in the model, so it cannot move a digest:
``IDistCollectiveLayer``'s collective and reduce operation, root and groups (no getters);
``IFillLayer.is_alpha_beta_int64`` (a method; the int-vs-float type of alpha shows it);
``IMoELayer``'s quantization settings given through ``set_quantization_*`` (setters only;
the gated weights it is given are tensors, so they are edges).

TensorRT is never imported here: callers pass the module (``tensorrt`` or ``tensorrt_rtx``),
and only the API the two share is used.
"""

from __future__ import annotations

import difflib
import hashlib
import heapq
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, helper, numpy_helper

from trtcas.cas.digest import DEFAULT_ALGO, Digest, TensorEntry, TensorManifest, hash_bytes
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
_COSMETIC = frozenset({"name", "metadata", "builder", "error_recorder"})
# Tensor properties written as the value_info type rather than as metadata.
_TENSOR_TYPED = frozenset({"dtype", "shape"})

# Properties whose getter logs an API-usage error (and returns a meaningless value) when an
# input tensor supplies the value instead: (op type, property) -> that input's slot. The
# tensor is recorded as an edge; the property is not read.
_SUPPLIED_BY_INPUT = {
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
_REQUIRES = {"normalization_quantize_to_type": "normalization_quantize_scale"}

# Layer-class properties whose values are weights, and the WeightsRole each one is refit by.
_ROLE_OF_PROPERTY = {"kernel": "KERNEL", "bias": "BIAS", "shift": "SHIFT", "scale": "SCALE", "weights": "CONSTANT"}

# LayerType members whose class name is not the member name with underscores removed.
_CLASS_ALIASES = {"CONDITIONAL_INPUT": "IIfConditionalInputLayer", "CONDITIONAL_OUTPUT": "IIfConditionalOutputLayer"}

_TRT_TO_ONNX_DTYPE = {
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
_TRT_DTYPE_NAME = {"BF16": "bfloat16", "FP8": "float8_e4m3fn", "INT4": "int4", "FP4": "float4_e2m1", "E8M0": "float8_e8m0"}


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

    def to_bytes(self) -> bytes:
        return serialize(self.model)

    def structural_model(self) -> onnx.ModelProto:
        """The model the structural digest is taken over (weight digests removed)."""
        return strip_weight_digests(self.model)


@dataclass(frozen=True)
class _WeightRef:
    """A weights-valued property, read once and hashed once."""

    prop: str
    dtype: str
    shape: tuple[int, ...]
    digest: Digest
    value: Any  # np.ndarray, or None for an empty Weights
    refit_name: str | None
    refittable: bool


@dataclass(frozen=True)
class _TensorRef:
    """A property whose value is a tensor (e.g. an attention mask): an edge, not a name."""

    key: str


@dataclass(frozen=True)
class _OwnerRef:
    """A loop, conditional or attention a boundary layer belongs to; ``group`` only tells
    owners apart internally (it follows insertion order and never reaches the model: the
    emitted ids ``loop0, loop1, ...`` follow canonical order)."""

    kind: str
    group: int


@dataclass(frozen=True)
class _Tensor:
    dtype: str
    shape: tuple[int, ...]
    dim_names: tuple[str | None, ...]
    props: tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class _Layer:
    index: int  # insertion index: only the last tie-breaker, and for error messages
    name: str  # TensorRT layer name: refit lookups only, never emitted
    op: str
    attrs: tuple[tuple[str, Any], ...]
    inputs: tuple[str | None, ...]  # internal tensor keys (TensorRT names)
    outputs: tuple[str, ...]
    back_edges: frozenset[int]  # input slots that close a loop (recurrence values)


@dataclass(frozen=True)
class _Network:
    layers: tuple[_Layer, ...]
    tensors: dict  # key -> _Tensor
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    flags: tuple[str, ...]


# ---------------------------------------------------------------------------------------
# Reading the network through the public API


def layer_classes(trt) -> dict:
    """LayerType -> the ILayer subclass whose properties describe it, for every member of
    ``trt.LayerType``. A member with no class of its own (the legacy ``PLUGIN``) maps to
    ``ILayer``, so it is still recorded by op type, edges and tensors."""
    by_key = {}
    for attr in dir(trt):
        if attr.startswith("I") and attr.endswith("Layer") and attr != "ILayer":
            by_key[attr[1:-5].lower()] = getattr(trt, attr)
    classes = {}
    for member_name, member in trt.LayerType.__members__.items():
        alias = _CLASS_ALIASES.get(member_name)
        if alias and hasattr(trt, alias):
            classes[member] = getattr(trt, alias)
        else:
            classes[member] = by_key.get(member_name.replace("_", "").lower(), trt.ILayer)
    return classes


def _readable_properties(cls, stop) -> tuple[str, ...]:
    """Public readable properties a class defines below ``stop`` in its MRO (so a subclass's
    own ``type`` — an ActivationType, say — is kept while ILayer's is not). Write-only
    properties (no getter) are skipped: reading them is not possible."""
    names = set()
    for klass in cls.__mro__:
        if klass is stop or klass is object:
            break
        for name, value in vars(klass).items():
            if name.startswith("_") or name in _COSMETIC:
                continue
            if isinstance(value, property) and value.fget is not None:
                names.add(name)
    return tuple(sorted(names))


_PROPS_CACHE: dict = {}


def _props_of(cls, stop) -> tuple[str, ...]:
    key = (cls, stop)
    if key not in _PROPS_CACHE:
        _PROPS_CACHE[key] = _readable_properties(cls, stop)
    return _PROPS_CACHE[key]


def _try_get(obj, name):
    """Read a property; some raise in some states (e.g. a Fill layer's alpha when it is an
    int64 fill, a Resize layer's scales when a shape is set). Those are skipped: the state
    that makes them unreadable is itself recorded by the properties that are readable."""
    try:
        return True, getattr(obj, name)
    except Exception:  # noqa: BLE001 - the binding raises assorted types
        return False, None


def _is_enum(value) -> bool:
    return hasattr(type(value), "__members__") and hasattr(value, "name")


class _Reader:
    """Converts property values of one network to canonical Python values, hashing each
    weights buffer once."""

    def __init__(self, trt, network, hints: "_OnnxHints", algo: str, copy_weights: bool = True):
        self.trt = trt
        self.copy_weights = copy_weights
        self._owners: dict = {}  # id -> (owner object kept alive, group number)
        self.network = network
        self.hints = hints
        self.algo = algo

    # -- scalars and containers
    def value(self, layer_name: str, prop: str, value, layer_op: str):
        trt = self.trt
        if value is None:
            return None
        if isinstance(value, (bool, np.bool_)):
            return int(bool(value))
        if isinstance(value, (int, np.integer)) and not _is_enum(value):
            return int(value)
        if isinstance(value, (float, np.floating)):
            return float(value)
        if isinstance(value, str):
            return value
        if _is_enum(value):
            return value.name
        if isinstance(value, trt.ITensor):
            return _TensorRef(_tensor_key(value))
        if isinstance(value, (np.ndarray, trt.Weights)):
            return self.weights(layer_name, prop, value, layer_op)
        if isinstance(value, (bytes, bytearray)):
            return str(hash_bytes(bytes(value), self.algo))
        try:
            items = list(value)
        except TypeError:
            return None
        converted = [self.value(layer_name, prop, item, layer_op) for item in items]
        if all(isinstance(c, (int, float, str)) for c in converted):
            return tuple(converted)
        return None  # unknown nested objects are not structure we can name

    def owner_group(self, owner) -> int:
        """Which loop/conditional/attention this is. pybind11 hands out the same Python
        object for the same C++ object while one is alive, so holding every owner seen makes
        identity reliable; names are not (users may give two loops one name)."""
        key = id(owner)
        if key not in self._owners:
            self._owners[key] = (owner, len(self._owners))
        return self._owners[key][1]

    # -- weights
    def weights(self, layer_name: str, prop: str, value, layer_op: str) -> _WeightRef:
        """Hash one weights buffer (once) and find its refit name. Weights are flat, as
        TensorRT holds them (constants get their shape from the layer afterwards)."""
        array, dtype = _weights_array(value)
        source = None
        if array is None and int(value.size):
            array = source = self.hints.unreadable(layer_name, prop, layer_op, value)
            if array is None:
                raise CanonicalizeError(
                    f"layer {layer_name!r}: {prop} weights of type {dtype} are not readable through the TensorRT "
                    "Python API; pass the source ONNX model (onnx_model=...) so their bytes can be hashed"
                )
        if array is None:  # an empty Weights: an absent bias, say
            array = np.zeros((0,), dtype=np.float32)
        flat = np.ascontiguousarray(array).reshape(-1)
        digest = hash_bytes(memoryview(flat.view(np.uint8)), self.algo)
        refit_name, matched = self.hints.refit_name(layer_name, prop, layer_op, flat, digest)
        shape = flat.shape
        refittable = False
        if refit_name is not None:
            ok, marked = _try_call(self.network, "are_weights_marked_refittable", refit_name)
            refittable = bool(ok and marked)
        return _WeightRef(prop, dtype, tuple(int(d) for d in shape), digest,
                          self._keepable(flat, source if source is not None else matched, shape),
                          refit_name, refittable)

    def _keepable(self, flat: np.ndarray, source, shape) -> np.ndarray | None:
        """The value handed out in ``weight_values``. TensorRT's arrays are views into memory
        the network or its parser owns, garbage once those are freed (seen in tests), so
        they are copied unless the caller opted out; an array decoded from the source ONNX
        model owns its memory already and is reused."""
        if flat.size == 0:
            return None
        if source is not None:
            return np.ascontiguousarray(source).reshape(shape)
        return (flat.copy() if self.copy_weights else flat).reshape(shape)


def _try_call(obj, method: str, *args):
    fn = getattr(obj, method, None)
    if fn is None:
        return False, None
    try:
        return True, fn(*args)
    except Exception:  # noqa: BLE001
        return False, None


def _weights_array(value):
    """(numpy array or None, dtype name). The bindings return numpy arrays for dtypes numpy
    has and a bare ``Weights`` (whose ``numpy()`` returns itself) for bf16/fp8/int4/fp4."""
    if isinstance(value, np.ndarray):
        return value, value.dtype.name
    dtype = value.dtype.name
    name = _TRT_DTYPE_NAME.get(dtype)
    try:
        array = value.numpy()
    except Exception:  # noqa: BLE001
        array = None
    if isinstance(array, np.ndarray):
        return array, array.dtype.name
    return None, name or dtype.lower()


def _tensor_key(tensor) -> str:
    return tensor.name


def _read_network(trt, network, hints: "_OnnxHints", algo: str, copy_weights: bool = True) -> _Network:
    """Every structural fact of ``network`` as plain values (TensorRT names appear only as
    internal keys)."""
    reader = _Reader(trt, network, hints, algo, copy_weights)
    classes = layer_classes(trt)
    tensors: dict = {}
    seen_producer: dict = {}

    def add_tensor(tensor, producer):
        key = _tensor_key(tensor)
        if key in seen_producer and seen_producer[key] != producer:
            raise CanonicalizeError(
                f"network has two tensors named {key!r}; give tensors unique names before canonicalizing"
            )
        seen_producer[key] = producer
        if key not in tensors:
            tensors[key] = _read_tensor(trt, network, tensor)
        return key

    _infer_all(network)
    inputs = tuple(add_tensor(network.get_input(i), ("input", i)) for i in range(network.num_inputs))
    layers = []
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        layers.append(_read_layer(trt, reader, classes, layer, index, add_tensor))
    outputs = tuple(_tensor_key(network.get_output(i)) for i in range(network.num_outputs))
    for key in outputs:
        if key not in tensors:
            raise CanonicalizeError(f"network output {key!r} is produced by no layer and is not an input")
    flags = tuple(name for name, flag in trt.NetworkDefinitionCreationFlag.__members__.items() if _flag_set(network, flag))
    return _Network(tuple(layers), tensors, inputs, outputs, flags)


def _infer_all(network) -> None:
    """Query every output's type and shape once, in insertion order, before reading anything
    else. TensorRT infers lazily, and some getters answer differently before and after
    inference; after this pass every layer is inferred, whatever the caller queried before.
    Errors are left for the real read, which reports them."""
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        for i in range(layer.num_outputs):
            tensor = layer.get_output(i)
            _try_get(tensor, "dtype")
            _try_get(tensor, "shape")


def _flag_set(network, flag) -> bool:
    ok, value = _try_call(network, "get_flag", flag)
    return bool(ok and value)


def _read_tensor(trt, network, tensor) -> _Tensor:
    try:
        shape = tuple(int(d) for d in tensor.shape)
    except Exception as exc:  # noqa: BLE001 - an invalid layer upstream
        raise CanonicalizeError(
            f"tensor {tensor.name!r} has no computable shape; the network is invalid (see TensorRT's log)"
        ) from exc
    dim_names = []
    for axis in range(len(shape)):
        ok, name = _try_call(tensor, "get_dimension_name", axis)
        dim_names.append(name if ok and name else None)
    props = []
    for prop in _props_of(type(tensor), object):
        if prop in _TENSOR_TYPED:
            continue
        ok, value = _try_get(tensor, prop)
        if ok and value is not None:
            props.append((prop, value.name if _is_enum(value) else value))
    ok, debug = _try_call(network, "is_debug_tensor", tensor)
    if ok:
        props.append(("debug", bool(debug)))
    props = tuple((k, int(v) if isinstance(v, bool) else v) for k, v in sorted(props))
    return _Tensor(tensor.dtype.name, shape, tuple(dim_names), props)


def _read_layer(trt, reader: _Reader, classes, layer, index: int, add_tensor) -> _Layer:
    layer_type = trt.ILayer.type.fget(layer)  # not `layer.type`: on a subclass it can mean another thing
    op = layer_type.name
    name = layer.name
    attrs: dict = {}
    # Base-layer facts that exist in some TensorRT flavours only (precision and output-type
    # constraints are gone in TensorRT-RTX, whose networks are typed by their tensors).
    # Constraints are recorded only when set: `get_output_type` of an unconstrained output
    # reports lazily inferred state (it reads `???` until a downstream shape is queried),
    # which would make the digest depend on the order layers are read in. The inferred
    # types themselves are recorded as the output tensors' dtypes.
    ok, value = _try_get(layer, "num_ranks")
    if ok and value is not None:
        attrs["num_ranks"] = int(value)
    ok, is_set = _try_get(layer, "precision_is_set")
    if ok:
        attrs["precision_is_set"] = int(bool(is_set))
        ok, value = _try_get(layer, "precision")
        if is_set and ok and value is not None:
            attrs["precision"] = value.name
    constraints = []
    for i in range(layer.num_outputs):
        ok, is_set = _try_call(layer, "output_type_is_set", i)
        if not ok:
            break
        ok, value = _try_call(layer, "get_output_type", i) if is_set else (False, None)
        constraints.append(value.name if ok and value is not None else "")
    else:
        if constraints:
            attrs["output_types"] = tuple(constraints)

    attrs.update(_class_attrs(trt, reader, classes.get(layer_type, trt.ILayer), layer, name, op))
    if op == "CONSTANT":
        _shape_constant_weights(attrs)

    inputs = []
    for slot in range(layer.num_inputs):
        tensor = layer.get_input(slot)
        inputs.append(None if tensor is None else _tensor_key(tensor))
    outputs = tuple(add_tensor(layer.get_output(i), ("layer", index, i)) for i in range(layer.num_outputs))
    # A recurrence layer's second input is the value fed back from the loop body: an edge
    # that closes a cycle, ignored when ordering and hashing (still serialized).
    back = frozenset(range(1, len(inputs))) if op == "RECURRENCE" else frozenset()
    return _Layer(index, name, op, tuple(sorted(attrs.items())), tuple(inputs), outputs, back)


def _class_attrs(trt, reader: _Reader, cls, layer, name: str, op: str) -> dict:
    """The properties of the layer's own class, read through a cast of the wrapper. The
    wrapper's class is restored afterwards, so a caller holding it sees no change."""
    attrs: dict = {}
    if cls is trt.ILayer:
        return attrs
    original = layer.__class__
    layer.__class__ = cls
    try:
        for prop in _props_of(cls, trt.ILayer):
            if _supplied_by_input(layer, op, prop):
                continue
            ok, value = _try_get(layer, prop)
            if not ok or value is None:
                continue
            for key, converted in _expand(trt, reader, name, prop, value, op):
                if converted is not None:
                    attrs[key] = converted
    finally:
        layer.__class__ = original
    return attrs


def _shape_constant_weights(attrs: dict) -> None:
    """Give a constant's weights the constant's shape (TensorRT hands them out flat), so the
    manifest says (4096, 4096) rather than (16777216,)."""
    ref, shape = attrs.get("weights"), attrs.get("shape")
    if not isinstance(ref, _WeightRef) or not isinstance(shape, tuple):
        return
    if int(np.prod(shape, dtype=np.int64)) != int(np.prod(ref.shape, dtype=np.int64)) or len(shape) == len(ref.shape) == 1:
        return
    value = None if ref.value is None else ref.value.reshape(shape)
    attrs["weights"] = replace(ref, shape=tuple(shape), value=value)


def _supplied_by_input(layer, op: str, prop: str) -> bool:
    slot = _SUPPLIED_BY_INPUT.get((op, prop))
    if slot is None or slot >= layer.num_inputs:
        return False
    ok, tensor = _try_call(layer, "get_input", slot)
    return ok and tensor is not None


def _expand(trt, reader: _Reader, layer_name: str, prop: str, value, op: str):
    """One property -> (attribute name, value) pairs. Owner objects (loop, conditional,
    attention) and plugins are opened one level: their own properties become
    ``owner.prop`` attributes."""
    owner_kind = _owner_kind(trt, value)
    if owner_kind is not None:
        yield prop, _OwnerRef(owner_kind, reader.owner_group(value))
        for sub in _props_of(type(value), object):
            required = _REQUIRES.get(sub)
            if required is not None and _try_get(value, required)[1] is None:
                continue
            ok, sub_value = _try_get(value, sub)
            if ok and sub_value is not None:
                yield f"{prop}.{sub}", reader.value(layer_name, f"{prop}.{sub}", sub_value, op)
        return
    if _is_plugin(trt, value):
        yield from _plugin_attrs(reader, prop, value)
        return
    yield prop, reader.value(layer_name, prop, value, op)


def _owner_kind(trt, value) -> str | None:
    for kind, cls_name in (("loop", "ILoop"), ("conditional", "IIfConditional"), ("attention", "IAttention")):
        cls = getattr(trt, cls_name, None)
        if cls is not None and isinstance(value, cls):
            return kind
    return None


def _is_plugin(trt, value) -> bool:
    return any(isinstance(value, getattr(trt, n)) for n in ("IPluginV2", "IPluginV3") if hasattr(trt, n))


def _plugin_attrs(reader: _Reader, prop: str, plugin):
    """A plugin is identified by its type, version and namespace, and configured by its
    serialization (which can carry per-rank state such as tp_rank: so it is structure).
    IPluginV3 exposes those through capability interfaces; both forms are tried."""
    for sub in ("plugin_type", "plugin_name", "plugin_version", "plugin_namespace", "num_outputs", "tensorrt_version"):
        ok, value = _try_get(plugin, sub)
        if ok and isinstance(value, (str, int)):
            yield f"{prop}.{sub}", value
    ok, data = _try_call(plugin, "serialize")
    if ok and data is not None:
        try:
            yield f"{prop}.serialized", str(hash_bytes(bytes(data), reader.algo))
        except TypeError:
            pass
    trt = reader.trt
    capability = getattr(trt, "PluginCapabilityType", None)
    if capability is not None and hasattr(plugin, "get_capability_interface"):
        ok, core = _try_call(plugin, "get_capability_interface", capability.CORE)
        if ok and core is not None:
            for sub in ("plugin_name", "plugin_version", "plugin_namespace"):
                ok, value = _try_get(core, sub)
                if ok and isinstance(value, str):
                    yield f"{prop}.{sub}", value


# ---------------------------------------------------------------------------------------
# Weight names from the source ONNX model


class _OnnxHints:
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


# ---------------------------------------------------------------------------------------
# Canonical order


def _h(*parts) -> bytes:
    return hashlib.blake2b(repr(parts).encode(), digest_size=16).digest()


def _sig_value(value):
    if isinstance(value, _WeightRef):
        return ("weights", value.dtype, value.shape, value.refittable)
    if isinstance(value, _TensorRef):
        return ("tensor",)
    if isinstance(value, _OwnerRef):
        return ("owner", value.kind)
    return value


def _local_signature(net: _Network, layer: _Layer) -> bytes:
    attrs = tuple((k, _sig_value(v)) for k, v in layer.attrs)
    outs = tuple(_tensor_sig(net.tensors[k]) for k in layer.outputs)
    return _h(layer.op, attrs, outs)


def _tensor_sig(tensor: _Tensor):
    return (tensor.dtype, tensor.shape, tuple(n is not None for n in tensor.dim_names), tensor.props)


def _producers(net: _Network) -> dict:
    producers = {key: ("input", pos) for pos, key in enumerate(net.inputs)}
    for position, layer in enumerate(net.layers):
        for out_idx, key in enumerate(layer.outputs):
            producers[key] = ("layer", position, out_idx)
    return producers


def _dependency_order(net: _Network, producers: dict) -> list[int]:
    """Any topological order (positions into ``net.layers``) over forward edges; used only
    to compute hashes, so which valid order it is does not matter. A cycle that is not a
    recurrence back edge is broken at the lowest insertion index (deterministic)."""
    n = len(net.layers)
    deps = [set() for _ in range(n)]
    users = [set() for _ in range(n)]
    for pos, layer in enumerate(net.layers):
        for slot, key in enumerate(layer.inputs):
            prod = producers.get(key) if key is not None else None
            if prod and prod[0] == "layer" and slot not in layer.back_edges and prod[1] != pos:
                deps[pos].add(prod[1])
                users[prod[1]].add(pos)
    remaining = [len(d) for d in deps]
    ready = [p for p in range(n) if remaining[p] == 0]
    heapq.heapify(ready)
    order, done = [], [False] * n
    while len(order) < n:
        if not ready:
            stuck = min(p for p in range(n) if not done[p])
            remaining[stuck] = 0
            ready.append(stuck)
        pos = heapq.heappop(ready)
        if done[pos]:
            continue
        done[pos] = True
        order.append(pos)
        for user in users[pos]:
            remaining[user] -= 1
            if remaining[user] == 0 and not done[user]:
                heapq.heappush(ready, user)
    return order


def _structural_keys(net: _Network, producers: dict) -> list:
    """A name- and order-free key per layer: a bottom-up hash (local signature and, per
    input slot, the producer's hash and output index or the network input position), then
    a top-down hash over it (per output, the multiset of consumers' hashes and slots and
    any network-output positions), then the weight digests, then the insertion index as
    the last resort for layers that are interchangeable in structure and weights."""
    order = _dependency_order(net, producers)
    local = [_local_signature(net, layer) for layer in net.layers]
    up: list = [None] * len(net.layers)
    for pos in order:
        layer = net.layers[pos]
        parts = []
        for slot, key in enumerate(layer.inputs):
            prod = producers.get(key) if key is not None else None
            if prod is None:
                parts.append(("none",) if key is None else ("dangling",))
            elif prod[0] == "input":
                parts.append(prod)
            elif slot in layer.back_edges or up[prod[1]] is None:
                parts.append(("back", local[prod[1]], prod[2]))
            else:
                parts.append((up[prod[1]], prod[2]))
        up[pos] = _h(local[pos], tuple(parts))

    consumers = _consumers(net)
    output_positions: dict = {}
    for out_pos, key in enumerate(net.outputs):
        output_positions.setdefault(key, []).append(out_pos)
    down: list = [None] * len(net.layers)
    for pos in reversed(order):
        per_output = []
        for key in net.layers[pos].outputs:
            uses = sorted(((down[c] if down[c] is not None else up[c]), slot) for c, slot in consumers.get(key, []))
            per_output.append((tuple(uses), tuple(output_positions.get(key, ()))))
        down[pos] = _h(up[pos], tuple(per_output))
    return [
        (down[p], tuple(v.digest.hex for _, v in layer.attrs if isinstance(v, _WeightRef)), p)
        for p, layer in enumerate(net.layers)
    ]


def _consumers(net: _Network) -> dict:
    consumers: dict = {}
    for pos, layer in enumerate(net.layers):
        for slot, key in enumerate(layer.inputs):
            if key is not None:
                consumers.setdefault(key, []).append((pos, slot))
    return consumers


def _canonical_order(net: _Network) -> list[int]:
    """Layer positions in canonical order: a depth-first post-order from the network
    outputs (by output position), visiting each layer's inputs by slot.

    That order depends only on structure, never on names or insertion order, and a local
    change (one attribute) leaves it unchanged, so two versions of a network diff layer by
    layer. Layers no output depends on (assertions, a loop's trip limit, a conditional's
    condition, dead layers) are then taken as further roots, the one with the smallest
    structural key (``_structural_keys``) first, each followed depth-first the same way.
    """
    producers = _producers(net)
    n = len(net.layers)
    result: list[int] = []
    state = [0] * n  # 0 unvisited, 1 on the DFS stack, 2 emitted

    def producer_layer(key):
        prod = producers.get(key) if key is not None else None
        return prod[1] if prod and prod[0] == "layer" else None

    def visit(root: int) -> None:
        stack = [(root, 0)]
        state[root] = 1
        while stack:
            pos, slot = stack[-1]
            inputs = net.layers[pos].inputs
            if slot < len(inputs):
                stack[-1] = (pos, slot + 1)
                if slot in net.layers[pos].back_edges:
                    continue  # the loop body is reached from its own outputs or as a later root
                prod = producer_layer(inputs[slot])
                if prod is not None and state[prod] == 0:  # on-stack producers close a loop: skip
                    state[prod] = 1
                    stack.append((prod, 0))
                continue
            stack.pop()
            state[pos] = 2
            result.append(pos)

    for key in net.outputs:
        prod = producer_layer(key)
        if prod is not None and state[prod] == 0:
            visit(prod)
    if len(result) < n:
        keys = _structural_keys(net, producers)
        consumers = _consumers(net)
        while len(result) < n:
            remaining = [p for p in range(n) if state[p] == 0]
            sinks = [
                p for p in remaining
                if all(state[c] != 0 for key in net.layers[p].outputs for c, _ in consumers.get(key, []))
            ]
            visit(min(sinks or remaining, key=keys.__getitem__))
    return result


# ---------------------------------------------------------------------------------------
# Emitting the canonical model


def _onnx_dtype(trt_dtype_name: str) -> int:
    return _TRT_TO_ONNX_DTYPE.get(trt_dtype_name, TensorProto.UNDEFINED)


def _attribute(name: str, value) -> AttributeProto:
    attr = AttributeProto()
    attr.name = name
    if isinstance(value, TensorProto):
        attr.type = AttributeProto.TENSOR
        attr.t.CopyFrom(value)
    elif isinstance(value, bool) or isinstance(value, int):
        attr.type = AttributeProto.INT
        attr.i = int(value)
    elif isinstance(value, float):
        if float(np.float32(value)) == value:
            attr.type = AttributeProto.FLOAT
            attr.f = value
        else:  # a double that float32 would round: keep it exact as text
            attr.type = AttributeProto.STRING
            attr.s = repr(value).encode()
    elif isinstance(value, str):
        attr.type = AttributeProto.STRING
        attr.s = value.encode()
    elif isinstance(value, tuple):
        if all(isinstance(v, int) for v in value):
            attr.type = AttributeProto.INTS
            attr.ints.extend(value)
        elif all(isinstance(v, (int, float)) for v in value):
            attr.type = AttributeProto.FLOATS
            attr.floats.extend(float(v) for v in value)
        else:
            attr.type = AttributeProto.STRINGS
            attr.strings.extend(str(v).encode() for v in value)
    else:
        raise TypeError(f"no attribute encoding for {type(value).__name__}")
    return attr


def _weight_tensor(role: str, ref: _WeightRef) -> TensorProto:
    """A weights reference: type and dims, no data, and (in ``metadata_props``) the role,
    dtype and digest. Not ``data_location=EXTERNAL``: viewers and the checker would go
    looking for a file named after the role."""
    tensor = TensorProto()
    tensor.name = role
    try:
        tensor.data_type = helper.np_dtype_to_tensor_dtype(np.dtype(ref.dtype))
    except Exception:  # noqa: BLE001 - dtypes numpy does not know
        tensor.data_type = TensorProto.UNDEFINED
    tensor.dims.extend(ref.shape)
    entries = [("role", role), ("dtype", ref.dtype), ("digest", str(ref.digest))]
    if ref.refittable:
        entries.append(("refittable", "1"))
    for key, value in entries:
        entry = tensor.metadata_props.add()
        entry.key, entry.value = key, value
    return tensor


def _value_info(name: str, tensor: _Tensor, dim_names: Mapping[str, str]) -> onnx.ValueInfoProto:
    info = onnx.ValueInfoProto()
    info.name = name
    tensor_type = info.type.tensor_type
    tensor_type.elem_type = _onnx_dtype(tensor.dtype)
    shape = tensor_type.shape
    shape.SetInParent()
    for size, dim_name in zip(tensor.shape, tensor.dim_names):
        dim = shape.dim.add()
        if dim_name is not None:
            dim.dim_param = dim_names[dim_name]
        elif size >= 0:
            dim.dim_value = size
        else:
            dim.dim_param = "?"
    for key, value in (("dtype", tensor.dtype),) + tensor.props:
        prop = info.metadata_props.add()
        prop.key, prop.value = key, str(value)
    return info


def _owner_ids(net: _Network, order: Sequence[int]) -> dict:
    ids, counts = {}, {}
    for pos in order:
        for _, value in net.layers[pos].attrs:
            if isinstance(value, _OwnerRef) and (value.kind, value.group) not in ids:
                count = counts.get(value.kind, 0)
                ids[(value.kind, value.group)] = f"{value.kind}{count}"
                counts[value.kind] = count + 1
    return ids


def _dim_name_map(net: _Network, tensor_names: Mapping[str, str]) -> dict:
    names: dict = {}
    for key in sorted(tensor_names, key=lambda k: int(tensor_names[k][1:])):
        for dim_name in net.tensors[key].dim_names:
            if dim_name is not None and dim_name not in names:
                names[dim_name] = f"d{len(names)}"
    return names


def _profile_props(profiles: list[dict]) -> list[tuple[str, str]]:
    props = []
    for p_index, profile in enumerate(profiles or ()):
        for position in sorted(profile):
            lo, opt, hi = profile[position]
            props.append((f"profile.{p_index}.input.{position}", f"min={list(lo)};opt={list(opt)};max={list(hi)}"))
    return props


def _normalize_profiles(input_names: Sequence[str], input_tensors: Sequence[_Tensor], profiles) -> list[dict]:
    """Profiles keyed by input position with int tuples; input names are accepted and turned
    into positions, so a renamed input keeps its profile's digest. Shapes are checked
    against the inputs here, where the message can name the input, rather than failing
    later inside an engine build."""
    result = []
    for p_index, profile in enumerate(profiles or ()):
        normalized = {}
        for key, shapes in dict(profile).items():
            position = _profile_position(input_names, p_index, key)
            where = f"profile {p_index} input {position}"
            try:
                lo, opt, hi = (tuple(int(d) for d in s) for s in shapes)
            except (TypeError, ValueError) as exc:
                raise CanonicalizeError(f"{where}: expected (min, opt, max) shapes") from exc
            if not len(lo) == len(opt) == len(hi):
                raise CanonicalizeError(f"{where}: min/opt/max shapes have different ranks")
            if any(not a <= b <= c for a, b, c in zip(lo, opt, hi)):
                raise CanonicalizeError(f"{where}: need min <= opt <= max in every dimension, got {lo}, {opt}, {hi}")
            tensor = input_tensors[position]
            if dict(tensor.props).get("is_shape_tensor") != 1:  # shape tensors take values, not shapes
                if len(lo) != len(tensor.shape):
                    raise CanonicalizeError(f"{where}: shapes of rank {len(lo)} for an input of rank {len(tensor.shape)}")
                fixed = [i for i, d in enumerate(tensor.shape) if d >= 0 and not lo[i] == hi[i] == d]
                if fixed:
                    raise CanonicalizeError(f"{where}: dimension {fixed[0]} is fixed at {tensor.shape[fixed[0]]} in the network")
            normalized[position] = (lo, opt, hi)
        result.append(normalized)
    return result


def _profile_position(input_names: Sequence[str], p_index: int, key) -> int:
    if isinstance(key, str):
        if key not in input_names:
            raise CanonicalizeError(f"profile {p_index} names input {key!r}, which the network does not have")
        return list(input_names).index(key)
    position = int(key)
    if not 0 <= position < len(input_names):
        raise CanonicalizeError(f"profile {p_index} names input {position}; the network has {len(input_names)} inputs")
    return position


def _build_model(net: _Network, order: Sequence[int], profiles: list[dict]):
    """The canonical model, filled in a fixed order, plus role -> weights and role -> layer
    name for the manifest and refit maps."""
    tensor_names = {key: f"t{i}" for i, key in enumerate(net.inputs)}
    layer_ids = {}
    for canon_idx, pos in enumerate(order):
        layer_ids[pos] = f"L{canon_idx}"
        for key in net.layers[pos].outputs:
            tensor_names.setdefault(key, f"t{len(tensor_names)}")
    owner_ids = _owner_ids(net, order)
    dim_names = _dim_name_map(net, tensor_names)

    model = onnx.ModelProto()
    model.ir_version = IR_VERSION
    model.producer_name = PRODUCER_NAME
    model.producer_version = str(CANONICAL_VERSION)
    for domain, version in (("", DEFAULT_DOMAIN_OPSET), (TRT_DOMAIN, CANONICAL_VERSION)):
        opset = model.opset_import.add()
        opset.domain, opset.version = domain, version
    graph = model.graph
    graph.name = "canonical"
    weights: dict = {}  # role -> _WeightRef
    roles_layer: dict = {}  # role -> TensorRT layer name
    for pos in order:
        layer = net.layers[pos]
        node = graph.node.add()
        node.name = layer_ids[pos]
        node.op_type = layer.op
        node.domain = TRT_DOMAIN
        node.input.extend("" if key is None else tensor_names.get(key, "") for key in layer.inputs)
        node.output.extend(tensor_names[key] for key in layer.outputs)
        for prop, value in layer.attrs:
            if isinstance(value, _WeightRef):
                role = f"{node.name}.{prop}"
                weights[role] = value
                roles_layer[role] = layer.name
                value = _weight_tensor(role, value)
            elif isinstance(value, _TensorRef):
                value = tensor_names.get(value.key, "")
            elif isinstance(value, _OwnerRef):
                value = owner_ids[(value.kind, value.group)]
            node.attribute.append(_attribute(prop, value))

    for key in net.inputs:
        graph.input.append(_value_info(tensor_names[key], net.tensors[key], dim_names))
    for key in net.outputs:
        graph.output.append(_value_info(tensor_names[key], net.tensors[key], dim_names))
    io = set(net.inputs) | set(net.outputs)
    for key in sorted(tensor_names, key=lambda k: int(tensor_names[k][1:])):
        if key not in io:
            graph.value_info.append(_value_info(tensor_names[key], net.tensors[key], dim_names))

    meta = [("trtcas.canonical_version", str(CANONICAL_VERSION)), ("network.flags", ",".join(net.flags))]
    meta += _profile_props(profiles)
    for key, value in meta:
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    return model, weights, roles_layer


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


# ---------------------------------------------------------------------------------------
# Public entry point


def canonicalize_network(
    trt,
    network,
    profiles: Iterable[Mapping] | None = None,
    *,
    onnx_model: onnx.ModelProto | None = None,
    algo: str = DEFAULT_ALGO,
    copy_weights: bool = True,
) -> CanonicalNetwork:
    """Canonicalize ``network`` (an ``INetworkDefinition`` of module ``trt``).

    ``profiles``: optimization profiles, each a mapping input position (or input name) ->
    (min, opt, max) shape. ``onnx_model``: the model the network was parsed from, if any;
    it supplies refit names of non-constant weights and the bytes of weights whose dtype
    numpy lacks (bf16, fp8, int4, fp4), which the TensorRT API cannot hand out.
    ``copy_weights=False`` hands out ``weight_values`` as views into TensorRT's memory
    (no copy of a multi-GB rank; valid only while the network and its parser live).
    """
    net = _read_network(trt, network, _OnnxHints(onnx_model), algo, copy_weights)
    normalized = _normalize_profiles(net.inputs, [net.tensors[k] for k in net.inputs], profiles)
    order = _canonical_order(net)
    model, weights, roles_layer = _build_model(net, order, normalized)

    entries, refit_names, values, layer_roles = [], {}, {}, {}
    for role, ref in weights.items():
        entries.append(TensorEntry(role, ref.dtype, ref.shape, ref.digest))
        if ref.value is not None:
            values[role] = ref.value
        if ref.refit_name is not None:
            refit_names[role] = ref.refit_name
        trt_role = _ROLE_OF_PROPERTY.get(ref.prop)
        if trt_role is not None and trt_role != "CONSTANT" and ref.digest.size:  # not an absent bias
            layer_roles[role] = (roles_layer[role], trt_role)
    full = serialize(model)
    structural = serialize(strip_weight_digests(model))
    return CanonicalNetwork(
        model=model,
        structural_digest=hash_bytes(structural, algo),
        full_digest=hash_bytes(full, algo),
        weights=TensorManifest.of(entries),
        refit_names=refit_names,
        weight_values=values,
        refit_layer_roles=layer_roles,
    )


# ---------------------------------------------------------------------------------------
# Differences, for `trtcas explain`


def _attr_text(attr: AttributeProto) -> str:
    if attr.type == AttributeProto.TENSOR:
        t = attr.t
        extra = {e.key: e.value for e in t.metadata_props}
        text = f"{extra.get('dtype', TensorProto.DataType.Name(t.data_type).lower())}{list(t.dims)}"
        if "digest" in extra:
            text += f" {Digest.parse(extra['digest']).short}"
        return text
    value = helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, list):
        return str([v.decode(errors="replace") if isinstance(v, bytes) else v for v in value])
    return str(value)


def _type_text(info: onnx.ValueInfoProto) -> tuple[str, str, dict]:
    tensor_type = info.type.tensor_type
    shape = "[" + ",".join(d.dim_param if d.HasField("dim_param") else str(d.dim_value) for d in tensor_type.shape.dim) + "]"
    props = {p.key: p.value for p in info.metadata_props}
    dtype = props.pop("dtype", TensorProto.DataType.Name(tensor_type.elem_type))
    return shape, dtype, props


def _diff_value_info(label: str, old: onnx.ValueInfoProto, new: onnx.ValueInfoProto) -> list[str]:
    (o_shape, o_dtype, o_props), (n_shape, n_dtype, n_props) = _type_text(old), _type_text(new)
    lines = []
    if o_shape != n_shape:
        lines.append(f"{label} shape {o_shape} -> {n_shape}")
    if o_dtype != n_dtype:
        lines.append(f"{label} dtype {o_dtype} -> {n_dtype}")
    for key in sorted(set(o_props) | set(n_props)):
        if o_props.get(key) != n_props.get(key):
            lines.append(f"{label} {key} {o_props.get(key, '(unset)')} -> {n_props.get(key, '(unset)')}")
    return lines


def _producer_map(model: onnx.ModelProto) -> dict:
    where = {info.name: f"input {i}" for i, info in enumerate(model.graph.input)}
    for node in model.graph.node:
        for i, name in enumerate(node.output):
            where[name] = f"{node.name}:{i}"
    return where


def _align(old_nodes, new_nodes) -> list[tuple[int | None, int | None]]:
    """Pairs of node indices matched by op-type sequence, so one inserted layer shows as
    one added layer, not as every later layer changed."""
    matcher = difflib.SequenceMatcher(a=[n.op_type for n in old_nodes], b=[n.op_type for n in new_nodes], autojunk=False)
    pairs = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal" or (tag == "replace" and i2 - i1 == j2 - j1):
            pairs.extend(zip(range(i1, i2), range(j1, j2)))
        else:
            pairs.extend((i, None) for i in range(i1, i2))
            pairs.extend((None, j) for j in range(j1, j2))
    return pairs


def diff_canonical(old: onnx.ModelProto, new: onnx.ModelProto) -> list[str]:
    """Human-readable differences between two canonical models: layers added, removed or
    changed (op type, attribute, input edge, output shape/dtype), network inputs and outputs,
    network flags and profiles. Empty when the models are equal."""
    lines: list[str] = []
    old_meta = {p.key: p.value for p in old.metadata_props}
    new_meta = {p.key: p.value for p in new.metadata_props}
    for key in sorted(set(old_meta) | set(new_meta)):
        if old_meta.get(key) != new_meta.get(key):
            lines.append(f"{key}: {old_meta.get(key, '(none)')} -> {new_meta.get(key, '(none)')}")

    for label, old_list, new_list in (("input", old.graph.input, new.graph.input), ("output", old.graph.output, new.graph.output)):
        for i in range(max(len(old_list), len(new_list))):
            if i >= len(old_list):
                lines.append(f"{label} {i} added: {' '.join(_type_text(new_list[i])[:2])}")
            elif i >= len(new_list):
                lines.append(f"{label} {i} removed: {' '.join(_type_text(old_list[i])[:2])}")
            else:
                lines.extend(_diff_value_info(f"{label} {i}", old_list[i], new_list[i]))

    old_nodes, new_nodes = list(old.graph.node), list(new.graph.node)
    pairs = _align(old_nodes, new_nodes)
    old_to_new = {old_nodes[i].name: new_nodes[j].name for i, j in pairs if i is not None and j is not None}
    old_where, new_where = _producer_map(old), _producer_map(new)
    old_infos = {v.name: v for v in list(old.graph.value_info) + list(old.graph.output)}
    new_infos = {v.name: v for v in list(new.graph.value_info) + list(new.graph.output)}

    def translate(where: str) -> str:
        layer, _, out = where.partition(":")
        return f"{old_to_new[layer]}:{out}" if layer in old_to_new else where

    for i, j in pairs:
        if j is None:
            lines.append(f"layer {old_nodes[i].name} removed: {old_nodes[i].op_type}")
            continue
        if i is None:
            lines.append(f"layer {new_nodes[j].name} added: {new_nodes[j].op_type}")
            continue
        o, n = old_nodes[i], new_nodes[j]
        label = f"layer {n.name} {n.op_type}" if o.name == n.name else f"layer {o.name}->{n.name} {n.op_type}"
        if o.op_type != n.op_type:
            lines.append(f"{label}: op type {o.op_type} -> {n.op_type}")
        o_attrs = {a.name: _attr_text(a) for a in o.attribute}
        n_attrs = {a.name: _attr_text(a) for a in n.attribute}
        for key in sorted(set(o_attrs) | set(n_attrs)):
            if o_attrs.get(key) != n_attrs.get(key):
                lines.append(f"{label}: attribute {key} {o_attrs.get(key, '(unset)')} -> {n_attrs.get(key, '(unset)')}")
        o_in = [translate(old_where.get(t, "none")) if t else "none" for t in o.input]
        n_in = [new_where.get(t, "none") if t else "none" for t in n.input]
        for slot in range(max(len(o_in), len(n_in))):
            a = o_in[slot] if slot < len(o_in) else "(none)"
            b = n_in[slot] if slot < len(n_in) else "(none)"
            if a != b:
                lines.append(f"{label}: input {slot} from {a} -> from {b}")
        for k in range(min(len(o.output), len(n.output))):
            if o.output[k] in old_infos and n.output[k] in new_infos:
                lines.extend(_diff_value_info(f"{label}: output {k}", old_infos[o.output[k]], new_infos[n.output[k]]))
    return lines
