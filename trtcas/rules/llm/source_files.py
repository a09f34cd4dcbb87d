"""A checkpoint directory as the files its rule reads, not as the whole directory.

The convert (HF) and the import (TensorRT-LLM checkpoint) key one input per file they read
(``hf:config.json``, ``hf:model.safetensors`` ...), so a file nothing reads (a README, a
tokenizer, ``generation_config.json``) is in no key. While running, the rule sees a
directory of exactly those files, linked into its scratch dir: it cannot read a file its key
does not hold, whichever files lie beside them.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from trtcas.errors import TrtcasError
from trtcas.graph.action import InputRef


def source_inputs(kind: str, source: str, files: list[str]) -> dict[str, InputRef]:
    """One source input per file (relative to the dir ``source``), named ``kind:file``."""
    return {f"{kind}:{name}": InputRef(path=f"{source}/{name}") for name in files}


@contextmanager
def linked_source_dir(ctx, kind: str) -> Iterator[Path]:
    """The keyed files (params ``files``) linked under their names into a scratch dir. An
    error naming a linked file is said with the user's directory instead of the scratch one."""
    root = ctx.scratch / kind
    shown = set()
    for name in ctx.params["files"]:
        path = Path(os.path.abspath(ctx.input_path(f"{kind}:{name}")))
        link = root / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(path)
        shown.add(path.parents[len(Path(name).parts) - 1])
    try:
        yield root
    except TrtcasError as exc:
        if len(shown) == 1 and exc.args and isinstance(exc.args[0], str):
            exc.args = (exc.args[0].replace(str(root), str(shown.pop())),) + exc.args[1:]
        raise
