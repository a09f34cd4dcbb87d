"""TensorRT-LLM checkpoints on disk: ``config.json`` (architecture, dtype, sizes, ``mapping``)
plus ``rank{N}.safetensors`` per rank, checked to agree before anything is built.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from trtcas.errors import TrtcasError
from trtcas.rules.formats.safetensors import BadSafetensors, map_tensors

CONFIG_FILE = "config.json"
REQUIRED_KEYS = ("architecture", "dtype", "vocab_size", "hidden_size", "num_hidden_layers",
                  "num_attention_heads")
# --------------------------------------------------------------------------- the checkpoint


@dataclass(frozen=True)
class TrtllmCheckpoint:
    """A TensorRT-LLM checkpoint directory: its parsed ``config.json`` and one file per rank.

    Reading it checks that the files agree with the config's ``mapping`` (every rank's file
    exists, and none beyond ``world_size``), so a checkpoint converted for another tp fails
    here in one line rather than as a shape error deep in a network build.
    """

    directory: Path
    config: Mapping[str, Any]
    rank_files: tuple[Path, ...]

    @property
    def tp_size(self) -> int:
        return checkpoint_mapping(self.config)[1]

    @property
    def pp_size(self) -> int:
        return checkpoint_mapping(self.config)[2]

    @property
    def world_size(self) -> int:
        return checkpoint_mapping(self.config)[0]


def read_trtllm_checkpoint(directory: str | os.PathLike, only_rank: int | None = None) -> TrtllmCheckpoint:
    """Read ``config.json`` and locate ``rank{N}.safetensors`` for every rank of ``directory``.

    ``only_rank``: the one rank file the caller reads (an import action, which sees and keys
    only that one): the others are not looked for. Planning checks them all."""
    root = Path(directory)
    if not root.is_dir():
        raise TrtcasError(f"TensorRT-LLM checkpoint directory {root} not found; point the target at the "
                          "directory holding config.json and rank*.safetensors")
    path = root / CONFIG_FILE
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise TrtcasError(f"{root} has no {CONFIG_FILE}; it is not a TensorRT-LLM checkpoint "
                          "(convert the HF model first)") from None
    except ValueError as exc:
        raise TrtcasError(f"{path} is not valid JSON ({exc}); re-run the conversion") from None
    except OSError as exc:
        raise TrtcasError(f"cannot read {path}: {exc.strerror or exc}; fix its permissions") from None
    if not isinstance(config, dict):
        raise TrtcasError(f"{path} is not a JSON object; re-run the conversion")
    missing = [key for key in REQUIRED_KEYS if key not in config]
    if missing:
        raise TrtcasError(f"{path} lacks {', '.join(map(repr, missing))}; it is not a TensorRT-LLM "
                          "checkpoint config (re-run the conversion)")
    world, tp, pp = checkpoint_mapping(config, path)
    files = tuple(root / f"rank{rank}.safetensors" for rank in range(world))
    if only_rank is not None:
        if not isinstance(only_rank, int) or not 0 <= only_rank < world:
            raise TrtcasError(f"rank {only_rank!r} is outside 0..{world - 1} of {root}")
        if not files[only_rank].is_file():
            raise TrtcasError(f"{root} lacks {files[only_rank].name}; the conversion did not finish")
        return TrtllmCheckpoint(root, config, files)
    absent = [f.name for f in files if not f.is_file()]
    if absent:
        raise TrtcasError(f"{root} lacks {', '.join(absent)}, which {CONFIG_FILE}'s mapping "
                          f"(world_size={world}, tp_size={tp}, pp_size={pp}) needs; the conversion did not finish")
    extra = sorted((p.name for p in root.glob("rank*.safetensors")
                    if re.fullmatch(r"rank(\d+)\.safetensors", p.name)
                    and int(p.name[4:-12]) >= world), key=lambda n: int(n[4:-12]))
    if extra:
        raise TrtcasError(f"{root} has {', '.join(extra)} but {CONFIG_FILE}'s mapping says world_size={world} "
                          f"(tp_size={tp}, pp_size={pp}); the rank files and the config disagree, re-convert "
                          "into an empty directory")
    return TrtllmCheckpoint(root, config, files)


def checkpoint_mapping(config: Mapping[str, Any], where: Any = CONFIG_FILE) -> tuple[int, int, int]:
    """(world_size, tp_size, pp_size); a missing ``mapping`` is TensorRT-LLM's default (1, 1, 1)."""
    mapping = config.get("mapping") or {}
    if not isinstance(mapping, Mapping):
        raise TrtcasError(f"{where}: mapping must be an object like {{\"tp_size\": 2}}, got {mapping!r}")
    sizes = {}
    for key in ("tp_size", "pp_size", "world_size"):
        value = mapping.get(key, 1 if key != "world_size" else None)
        if value is None:
            value = sizes["tp_size"] * sizes["pp_size"]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise TrtcasError(f"{where}: mapping.{key} must be a positive integer, got {value!r}")
        sizes[key] = value
    if sizes["world_size"] != sizes["tp_size"] * sizes["pp_size"]:
        raise TrtcasError(f"{where}: mapping.world_size={sizes['world_size']} is not tp_size*pp_size="
                          f"{sizes['tp_size']}*{sizes['pp_size']}; fix the mapping or re-convert")
    return sizes["world_size"], sizes["tp_size"], sizes["pp_size"]


def read_rank_weights(checkpoint: TrtllmCheckpoint, rank: int) -> dict[str, np.ndarray]:
    """Rank ``rank``'s tensors by name, memory-mapped (read-only; nothing is copied).

    bfloat16 comes back typed ``ml_dtypes.bfloat16``. The arrays keep the map open, so a
    network built from them can use them for as long as it lives.
    """
    if not isinstance(rank, int) or not 0 <= rank < checkpoint.world_size:
        raise TrtcasError(f"rank {rank!r} is outside 0..{checkpoint.world_size - 1} of {checkpoint.directory}")
    try:
        return map_tensors(checkpoint.rank_files[rank])
    except BadSafetensors as exc:
        raise TrtcasError(f"{exc}; re-convert") from None
