"""trtcas: a content-addressed build cache for TensorRT and TensorRT-LLM engines.

The Python API benchmark harnesses use::

    import trtcas
    result = trtcas.build("trtcas.toml", cache_dir="/tmp/cache", jobs=2)
    result.ok, result.counts(), result.action("engine[rank0]").status, result.to_json()
    trtcas.run("trtcas.toml", tokens=[1, 2, 3]).logits   # the networks evaluated in numpy
"""

from trtcas.api import build, run
from trtcas.cas.content_store import ContentStore
from trtcas.config import load_config
from trtcas.errors import TrtcasError
from trtcas.graph.result import ActionRecord, BuildResult

__all__ = ["build", "run", "load_config", "BuildResult", "ActionRecord", "ContentStore", "TrtcasError"]
__version__ = "0.1.0"
