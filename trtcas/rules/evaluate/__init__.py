"""A numpy reference evaluator of TensorRT networks.

Nobody can run an engine built on a machine without a GPU, so what can be checked there is
the *network*: :func:`evaluate_network` computes it layer by layer from what the public
TensorRT Python API reports (layer types, attributes, constant weights), and
:func:`evaluate_ranks` does so for tensor-parallel ranks, simulating their collectives.
Comparing the result with the source model (ONNX Runtime, transformers) proves that the
network trtcas writes computes the model. Anything it cannot evaluate exactly raises
:class:`EvaluateError` naming the layer.

TensorRT is never imported here: callers pass the module (``tensorrt`` or ``tensorrt_rtx``).
"""

from trtcas.rules.evaluate.collectives import CollectiveSpec, evaluate_ranks
from trtcas.rules.evaluate.errors import EvaluateError
from trtcas.rules.evaluate.walk import CollectiveRequest, evaluate_network, evaluate_steps


def supported_layer_types() -> tuple[str, ...]:
    """``trt.LayerType`` member names the evaluator implements (DIST_COLLECTIVE included)."""
    from trtcas.rules.evaluate import layers_basic, layers_llm, layers_nn, layers_shape

    names = set()
    for module in (layers_basic, layers_shape, layers_nn, layers_llm):
        names.update(module.LAYERS)
    names -= {"MOE", "KV_CACHE_UPDATE"}  # registered only to refuse them by name
    return tuple(sorted(names | {"DIST_COLLECTIVE"}))


__all__ = ["CollectiveRequest", "CollectiveSpec", "EvaluateError", "evaluate_network", "evaluate_ranks",
           "evaluate_steps", "supported_layer_types"]
