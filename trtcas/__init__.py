"""trtcas: a content-addressed build cache for TensorRT and TensorRT-LLM engines."""

from trtcas.cas.content_store import ContentStore
from trtcas.errors import TrtcasError

__all__ = ["ContentStore", "TrtcasError"]
__version__ = "0.1.0"
