"""A TensorRT network as a canonical ONNX model, and the digests that key engine builds.

An engine key must change when anything that shapes the plan changes (op type, attribute,
shape, dtype, edge, profile) and must not change for cosmetic edits (names, doc strings,
node order among independent nodes, initializer order), or a fine-tune would rebuild an
engine it could refit. So the network is walked through the public TensorRT Python API
(``read``) and re-emitted (``emit``) as an ONNX model in which:

- every layer is a node of domain ``trt`` whose op type is the layer type name and whose
  attributes are every readable public property of that layer class, sorted by name;
- layers are ordered depth-first from the network outputs (``order``: by output position,
  inputs by slot), an order that depends on structure alone; tensors are named ``t0, t1,
  ...``: network inputs by position, then layer outputs in that order. No TensorRT name
  reaches the model;
- weights are references (dtype, shape, digest, and a structural role such as ``L3.kernel``)
  so that the *structural* digest, which omits the weight digests, survives a weight-only
  change while the *full* digest does not.

What the public API does not expose is not in the model, so it cannot move a digest:
``IDistCollectiveLayer``'s collective and reduce operation, root and groups (no getters);
``IFillLayer.is_alpha_beta_int64`` (a method; the int-vs-float type of alpha shows it);
``IMoELayer``'s quantization settings given through ``set_quantization_*`` (setters only;
the gated weights it is given are tensors, so they are edges). ``diff`` turns two canonical
models into lines for ``trtcas explain``.

TensorRT is never imported here: callers pass the module (``tensorrt`` or ``tensorrt_rtx``),
and only the API the two share is used.
"""

from trtcas.rules.canonical.diff import diff_canonical
from trtcas.rules.canonical.emit import canonicalize_network
from trtcas.rules.canonical.model import (
           TRT_DOMAIN,
           CanonicalizeError,
           CanonicalNetwork,
           serialize,
           strip_weight_digests,
)
from trtcas.rules.canonical.read import KnownWeights, layer_classes

__all__ = ["TRT_DOMAIN", "canonicalize_network", "diff_canonical", "serialize", "strip_weight_digests", "layer_classes",
           "CanonicalNetwork", "CanonicalizeError", "KnownWeights"]
