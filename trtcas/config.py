"""Target files (``trtcas.toml``) and command-line overrides of any of their values.

Every option in a target file is also a flag: ``--set engine.optimization_level=5``
overrides the value at that dotted path (parsed as a TOML value, else taken as a string);
the Python API also takes a mapping ``{"engine.optimization_level": 5}``.
Relative paths in a target file are relative to the file, never to the working directory,
so ``trtcas build path/to/trtcas.toml`` means the same thing from anywhere.

Strict: every section and key must be one that something reads, or loading fails with the
nearest valid name. What is valid is declared, not listed here: the sections below apply to
every target, and each planner (``graph.dag.Planner.schema``) declares the ones it reads.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Union

from trtcas.errors import TrtcasError

DEFAULT_TARGET = "trtcas.toml"

# Sections every target file may have, whatever builds it (planners add theirs).
# Adding a key that trtcas itself reads is one line here.
COMMON_SCHEMA: Mapping[str, frozenset[str]] = {
    "target": frozenset({"name"}),
    "output": frozenset({"dir"}),
    "execution": frozenset({"scheduler", "address"}),  # graph.schedulers.EXECUTION_KEYS: where actions run
}

# "KEY=VALUE" strings (as from --set), or a mapping of dotted key -> value.
Overrides = Union[Iterable[str], Mapping[str, Any], str]


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


def override_items(overrides: Overrides) -> list[tuple[list[str], Any, str]]:
    """(dotted path, value, how the user wrote it) for each override."""
    if isinstance(overrides, str):  # one "k=v", not its characters
        overrides = [overrides]
    if isinstance(overrides, Mapping):
        items = []
        for key, value in overrides.items():
            if not isinstance(key, str) or not key.strip() or any(not p for p in key.split(".")):
                raise TrtcasError(f"bad override key {key!r}: use a dotted name like 'engine.optimization_level'")
            items.append((key.strip().split("."), value, f"override {key}"))
        return items
    items = []
    for text in overrides:
        if not isinstance(text, str):
            raise TrtcasError(f"bad override {text!r}: use 'SECTION.KEY=VALUE' strings or a mapping")
        path, value = parse_override(text)
        items.append((path, value, f"--set {text}"))
    return items


def apply_overrides(data: dict[str, Any], overrides: Overrides) -> dict[str, Any]:
    """Apply overrides to ``data`` in place and return it."""
    for path, value, said in override_items(overrides):
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise TrtcasError(f"bad {said}: {part!r} is not a table")
            node = child
        node[path[-1]] = value
    return data


def _nearest(name: str, valid: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(valid), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else f"; valid: {', '.join(sorted(valid)) or 'none'}"


def target_schema(data: Mapping[str, Any]) -> tuple[dict[str, frozenset[str]], dict[str, str]]:
    """The sections and keys valid in ``data``, and, for keys only *other* kinds of target
    read, the kind that does (so ``tp`` in an ONNX target is called a contradiction)."""
    from trtcas.graph.dag import EXPLICIT_SCHEMA, PLANNERS, target_planner

    planner = target_planner(data)
    if planner is not None:
        own = [planner.schema]
    elif "action" in data:
        own = [EXPLICIT_SCHEMA]
    else:  # no build described yet: check against what any planner reads (plan_actions then says more)
        own = [p.schema for p in PLANNERS.all().values()]
    schema: dict[str, frozenset[str]] = dict(COMMON_SCHEMA)
    for extra in own:
        for section, keys in extra.items():
            schema[section] = schema.get(section, frozenset()) | frozenset(keys)
    others: dict[str, str] = {}
    if planner is not None:
        for other in PLANNERS.all().values():
            for section, keys in other.schema.items():
                others.setdefault(section, other.name)
                for key in keys:
                    others.setdefault(f"{section}.{key}", other.name)
    return schema, others


def check_schema(data: Mapping[str, Any], overridden: Mapping[str, str], path: Path) -> None:
    """Every section and key of ``data`` is one something reads (see the module docstring)."""
    from trtcas.graph.dag import target_planner

    schema, others = target_schema(data)
    kind = getattr(target_planner(data), "name", None)

    def fail(dotted: str, problem: str) -> None:
        said = [s for key, s in overridden.items() if key == dotted or key.startswith(dotted + ".")]
        raise TrtcasError(f"{said[0] if said else path}: {problem}")

    for section, table in data.items():
        if section not in schema:
            if section in others:
                fail(section, f"[{section}] is for {others[section]} targets, not this {kind} target; remove it")
            fail(section, f"unknown section [{section}]{_nearest(section, schema)}")
        if section == "action":
            continue
        if not isinstance(table, dict):
            fail(section, f"[{section}] must be a table of settings, not {table!r}")
        for key in table:
            if key not in schema[section]:
                dotted = f"{section}.{key}"
                if dotted in others and others[dotted] != kind:
                    fail(dotted, f"[{section}] {key} is for {others[dotted]} targets, not this {kind} target; remove it")
                fail(dotted, f"unknown setting [{section}] {key}{_nearest(key, schema[section])}")


def load_config(path: str | Path = DEFAULT_TARGET, overrides: Overrides = (), check: bool = True) -> TargetConfig:
    """The target file at ``path`` with ``overrides`` applied, its schema checked unless
    ``check`` is off (a build answered from its stamp had exactly this config checked when
    the stamp was written; ``check_config`` checks it later)."""
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
    if check:
        check_config(data, overrides, path)
    target, output = data.get("target", {}), data.get("output", {})
    for where, value in (("[target] name", target.get("name", "")), ("[output] dir", output.get("dir", "out"))):
        if not isinstance(value, str):
            raise TrtcasError(f"{path}: {where} must be a string, not {value!r}")
    name = target.get("name") or path.parent.name or "target"
    data.setdefault("target", {})["name"] = name  # planners name outputs after it
    output_dir = (path.parent / output.get("dir", "out")).resolve()
    return TargetConfig(path, name, path.parent, output_dir, data)


def check_config(data: Mapping[str, Any], overrides: Overrides, path: Path) -> None:
    """Every section and key of a loaded target is one something reads (``check_schema``)."""
    check_schema(data, {".".join(p): said for p, _, said in override_items(overrides)}, path)


def find_targets(args: Iterable[str]) -> tuple[list[Path], tuple[str, ...]]:
    """Command-line words -> (target files, action names).

    A word naming an existing file, or ending in ``.toml``, is a target file; a directory is
    its ``trtcas.toml``, or, when it has none, every ``*/trtcas.toml`` one level down (a
    folder of variants). Any other word is an action id or rule name. No target file means
    ``./trtcas.toml``.
    """
    targets: list[Path] = []
    actions: list[str] = []
    for word in args:
        path = Path(word)
        if path.is_dir():
            if (path / DEFAULT_TARGET).is_file():
                targets.append(path / DEFAULT_TARGET)
                continue
            found = sorted(path.glob(f"*/{DEFAULT_TARGET}"))
            if not found:
                raise TrtcasError(f"directory {path} holds no {DEFAULT_TARGET} (nor any */{DEFAULT_TARGET}); "
                                  "name a target file")
            targets += found
        elif path.suffix == ".toml" or path.exists():
            targets.append(path)
        else:
            actions.append(word)
    return targets or [Path(DEFAULT_TARGET)], tuple(actions)
