"""Reading a TensorRT network through the public Python API into canonical values.

Every readable public property of each layer class becomes an attribute; weights become
references (dtype, shape, digest). What the API does not expose cannot move a digest.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import numpy as np

from trtcas.cas.digest import hash_bytes
from trtcas.rules.canonical.model import (
    CLASS_ALIASES,
    COSMETIC,
    REQUIRES,
    SUPPLIED_BY_INPUT,
    TENSOR_TYPED,
    TRT_DTYPE_NAME,
    CanonicalizeError,
    Layer,
    Network,
    OwnerRef,
    Tensor,
    TensorRef,
    WeightRef,
)
from trtcas.rules.canonical.onnx_names import OnnxHints


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
        alias = CLASS_ALIASES.get(member_name)
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
            if name.startswith("_") or name in COSMETIC:
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

    def __init__(self, trt, network, hints: "OnnxHints", algo: str, copy_weights: bool = True,
                 known: "KnownWeights | None" = None):
        self.trt = trt
        self.copy_weights = copy_weights
        self.known = known or KnownWeights()
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
            return TensorRef(_tensor_key(value))
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
    def weights(self, layer_name: str, prop: str, value, layer_op: str) -> WeightRef:
        """Hash one weights buffer (once) and find its refit name. Weights are flat, as
        TensorRT holds them (constants get their shape from the layer afterwards)."""
        array, dtype = _weights_array(value)
        source = None
        if layer_op == "CONSTANT" and prop == "weights":
            known = self.known.digests.get(layer_name)
            if known is not None and known.algo == self.algo and known.size == int(value.nbytes):
                return self._known_ref(layer_name, prop, dtype, int(value.size), known)
            if array is None:
                array = source = self.known.arrays.get(layer_name)
                if array is not None and array.nbytes != int(value.nbytes):
                    array = source = None
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
        return WeightRef(prop, dtype, tuple(int(d) for d in shape), digest,
                          self._keepable(flat, source if source is not None else matched, shape),
                          refit_name, refittable)

    def _known_ref(self, layer_name: str, prop: str, dtype: str, size: int, digest) -> WeightRef:
        """A constant whose bytes the caller already hashed and stored (a converter's tensor
        manifest): its digest is taken by name, not recomputed, and no value is handed out
        (the blob is in the store already). Constants are refit by their layer's name."""
        ok, marked = _try_call(self.network, "are_weights_marked_refittable", layer_name)
        return WeightRef(prop, dtype, (size,), digest, None, layer_name, bool(ok and marked))

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
    name = TRT_DTYPE_NAME.get(dtype)
    try:
        array = value.numpy()
    except Exception:  # noqa: BLE001
        array = None
    if isinstance(array, np.ndarray):
        return array, array.dtype.name
    return None, name or dtype.lower()


def _tensor_key(tensor) -> str:
    return tensor.name


@dataclass(frozen=True)
class KnownWeights:
    """What the writer of a network already knows of its constants, by constant layer name:
    ``digests`` of bytes already hashed and stored (a converter's tensor manifest: used as
    is, so weights are not hashed twice), ``arrays`` holding the bytes of constants whose
    dtype TensorRT's Python API cannot hand out (bf16). A digest is trusted only when its
    algorithm and byte size match the constant's."""

    digests: Mapping[str, Any] = field(default_factory=dict)
    arrays: Mapping[str, np.ndarray] = field(default_factory=dict)


def read_network(trt, network, hints: "OnnxHints", algo: str, copy_weights: bool = True,
                 known: KnownWeights | None = None) -> Network:
    """Every structural fact of ``network`` as plain values (TensorRT names appear only as
    internal keys)."""
    reader = _Reader(trt, network, hints, algo, copy_weights, known)
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
    return Network(tuple(layers), tensors, inputs, outputs, flags)


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


def _read_tensor(trt, network, tensor) -> Tensor:
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
        if prop in TENSOR_TYPED:
            continue
        ok, value = _try_get(tensor, prop)
        if ok and value is not None:
            props.append((prop, value.name if _is_enum(value) else value))
    ok, debug = _try_call(network, "is_debug_tensor", tensor)
    if ok:
        props.append(("debug", bool(debug)))
    props = tuple((k, int(v) if isinstance(v, bool) else v) for k, v in sorted(props))
    return Tensor(tensor.dtype.name, shape, tuple(dim_names), props)


def _read_layer(trt, reader: _Reader, classes, layer, index: int, add_tensor) -> Layer:
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
    return Layer(index, name, op, tuple(sorted(attrs.items())), tuple(inputs), outputs, back)


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
    if not isinstance(ref, WeightRef) or not isinstance(shape, tuple):
        return
    if int(np.prod(shape, dtype=np.int64)) != int(np.prod(ref.shape, dtype=np.int64)) or len(shape) == len(ref.shape) == 1:
        return
    value = None if ref.value is None else ref.value.reshape(shape)
    attrs["weights"] = replace(ref, shape=tuple(shape), value=value)


def _supplied_by_input(layer, op: str, prop: str) -> bool:
    slot = SUPPLIED_BY_INPUT.get((op, prop))
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
        yield prop, OwnerRef(owner_kind, reader.owner_group(value))
        for sub in _props_of(type(value), object):
            required = REQUIRES.get(sub)
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
