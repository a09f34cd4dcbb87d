"""The evaluator's one error type.

A reference evaluator that guesses is worse than none: a layer type, or an attribute value,
that it does not implement must stop the evaluation and say which layer and what is
missing, so that "the network computes the model" is never claimed on a silent fallback.
"""

from trtcas.errors import TrtcasError


class EvaluateError(TrtcasError):
    """A network the reference evaluator cannot evaluate (or feeds it cannot take)."""


def unsupported(layer, what: str) -> EvaluateError:
    """An :class:`EvaluateError` naming ``layer`` (by name and type) and what is missing."""
    return EvaluateError(f"layer {layer.name!r} ({layer.type.name}): {what} is not supported by the reference evaluator")
