"""trtcas: a content-addressed build cache for TensorRT and TensorRT-LLM engines.

The Python API benchmark harnesses use::

    import trtcas
    result = trtcas.build("trtcas.toml", cache_dir="/tmp/cache", jobs=2)
    result.ok, result.counts(), result.action("engine[rank0]").status, result.to_json()
    trtcas.run("trtcas.toml", tokens=[1, 2, 3]).logits   # the networks evaluated in numpy
"""

from trtcas.errors import TrtcasError

__all__ = ["build", "run", "load_config", "BuildResult", "ActionRecord", "ContentStore", "TrtcasError"]
__version__ = "0.1.0"

# Loaded on first use (PEP 562): ``import trtcas.cas...`` or the CLI's no-op path must not
# pay for the build engine's imports (networkx, the rules) before it needs them.
_LAZY = {
    "build": ("trtcas.api", "build"),
    "run": ("trtcas.api", "run"),
    "ContentStore": ("trtcas.cas.content_store", "ContentStore"),
    "load_config": ("trtcas.config", "load_config"),
    "ActionRecord": ("trtcas.graph.result", "ActionRecord"),
    "BuildResult": ("trtcas.graph.result", "BuildResult"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib  # noqa: PLC0415

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'trtcas' has no attribute {name!r}")
