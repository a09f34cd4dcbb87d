"""Settings that belong to a cache directory, not to a build: ``<cache>/config.json``.

Like ccache's ``-M``, a size cap is a property of the cache that every process using it must
honour, so it is persisted beside the blobs (``trtcas cache config max-size 50G``) rather than
passed per command. Every setting has a name as users type it, a parser that gives one clear
error, and a default; ``None`` means "off" where a setting can be off.

    max-size              cap on the cache's size; after each build gc runs when over it (off)
    pin-max-age           pins (the last build of each target) older than this expire (off)
    gc-min-age            gc never removes anything used more recently than this (15m)
    remote-max-blob-size  a remote blob larger than this is not downloaded (64G)
    remote-deadline       overall seconds a remote request may take, plus 1 s per 16 MiB (120s)
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable

from trtcas.cas.atomic import atomic_write_bytes
from trtcas.errors import TrtcasError

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.IGNORECASE)
_OFF = ("none", "off", "")


def parse_size(text: str) -> int:
    """``"50G"``, ``"1.5GiB"``, ``"200M"``, ``"1024"`` -> bytes (binary units)."""
    match = _SIZE_RE.match(str(text))
    if not match:
        raise TrtcasError(f"bad size {text!r}: use a number with an optional K, M, G or T suffix, e.g. 50G")
    return int(float(match[1]) * _UNITS[match[2].upper()])


def parse_duration(text: str) -> float:
    """``"30d"``, ``"12h"``, ``"15m"``, ``"90s"``, ``"90"`` -> seconds."""
    match = _DURATION_RE.match(str(text))
    if not match:
        raise TrtcasError(f"bad duration {text!r}: use a number with an optional s, m, h, d or w suffix, e.g. 30d")
    return float(match[1]) * _SECONDS[match[2].lower()]


@dataclass(frozen=True)
class CacheSettings:
    """The persisted settings of one cache directory (see the module docstring)."""

    max_size: int | None = None
    pin_max_age_s: float | None = None
    gc_min_age_s: float = 15 * 60
    remote_max_blob_size: int = 64 << 30
    remote_deadline_s: float = 120.0


# user-facing name -> (field, parser, may be off)
_SETTINGS: dict[str, tuple[str, Callable[[str], Any], bool]] = {
    "max-size": ("max_size", parse_size, True),
    "pin-max-age": ("pin_max_age_s", parse_duration, True),
    "gc-min-age": ("gc_min_age_s", parse_duration, False),
    "remote-max-blob-size": ("remote_max_blob_size", parse_size, False),
    "remote-deadline": ("remote_deadline_s", parse_duration, False),
}
SETTING_NAMES = tuple(_SETTINGS)


def _spec(name: str) -> tuple[str, Callable[[str], Any], bool]:
    if name not in _SETTINGS:
        import difflib

        near = difflib.get_close_matches(name, SETTING_NAMES, n=1)
        hint = f"did you mean {near[0]!r}? " if near else ""
        raise TrtcasError(f"unknown cache setting {name!r}; {hint}known: {', '.join(SETTING_NAMES)}")
    return _SETTINGS[name]


def setting_value(settings: CacheSettings, name: str) -> Any:
    return getattr(settings, _spec(name)[0])


def with_setting(settings: CacheSettings, name: str, text: str) -> CacheSettings:
    """``settings`` with ``name`` parsed from ``text`` ("none"/"off" turns an optional one off)."""
    attr, parse, optional = _spec(name)
    if str(text).strip().lower() in _OFF:
        if not optional:
            raise TrtcasError(f"cache setting {name} cannot be turned off; give a value")
        return replace(settings, **{attr: None})
    value = parse(text)
    if value < 0 or (value == 0 and attr in ("remote_deadline_s", "remote_max_blob_size")):
        raise TrtcasError(f"cache setting {name} = {text!r} must be positive")
    return replace(settings, **{attr: value})


def load_settings(path: Path) -> CacheSettings:
    """The settings stored at ``path``; defaults when there is none. A broken file is an
    error that names it (silently ignoring a size cap would let the disk fill)."""
    try:
        wire = json.loads(path.read_text())
    except FileNotFoundError:
        return CacheSettings()
    except (OSError, ValueError) as exc:
        raise TrtcasError(f"cannot read cache settings {path} ({exc}); fix it or remove it to get the defaults") from None
    known = {f.name for f in fields(CacheSettings)}
    if not isinstance(wire, dict) or set(wire) - known:
        raise TrtcasError(f"cache settings {path} has unknown entries; fix it or remove it to get the defaults")
    return CacheSettings(**wire)


def save_settings(path: Path, settings: CacheSettings) -> None:
    atomic_write_bytes(path, json.dumps(asdict(settings), indent=1, sort_keys=True).encode())
