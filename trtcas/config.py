"""Target files (``trtcas.toml``) and command-line overrides of any of their values.

Every option in a target file is also a flag: ``--set engine.optimization_level=5``
overrides the value at that dotted path (parsed as a TOML value, else taken as a string).
Relative paths in a target file are relative to the file, never to the working directory,
so ``trtcas build path/to/trtcas.toml`` means the same thing from anywhere.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from trtcas.errors import TrtcasError

DEFAULT_TARGET = "trtcas.toml"


@dataclass(frozen=True)
class TargetConfig:
    path: Path
    name: str
    base_dir: Path
    output_dir: Path
    data: Mapping[str, Any]

    @property
    def slug(self) -> str:
        """A file-name-safe id, unique per target file location (for pins and history)."""
        where = hashlib.sha256(str(self.path).encode()).hexdigest()[:8]
        return f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', self.name)}-{where}"


def parse_override(text: str) -> tuple[list[str], Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise TrtcasError(f"bad --set {text!r}: use SECTION.KEY=VALUE, e.g. engine.optimization_level=5")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise TrtcasError(f"bad --set {text!r}: {part!r} is not a table")
            node = child
        node[path[-1]] = value
    return data


def load_config(path: str | Path = DEFAULT_TARGET, overrides: Iterable[str] = ()) -> TargetConfig:
    path = Path(path)
    if path.is_dir():
        path = path / DEFAULT_TARGET
    path = path.absolute()
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise TrtcasError(f"target file {path} not found; pass the path of a trtcas.toml") from None
    except tomllib.TOMLDecodeError as exc:
        raise TrtcasError(f"target file {path} is not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TrtcasError(f"cannot read target file {path}: {exc}") from None
    data = apply_overrides(data, overrides)
    target = data.get("target", {})
    output = data.get("output", {})
    if not isinstance(target, dict) or not isinstance(output, dict):
        raise TrtcasError(f"{path}: [target] and [output] must be tables")
    name = str(target.get("name") or path.parent.name or "target")
    output_dir = (path.parent / str(output.get("dir", "out"))).resolve()
    return TargetConfig(path, name, path.parent, output_dir, data)
