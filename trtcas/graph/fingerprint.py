"""The environment fingerprint: the facts about this machine an engine depends on.

Read at run time and never by importing TensorRT (package metadata and the NVIDIA driver's
own files/tools tell the versions), so ``trtcas env`` works anywhere. This module knows the
generic fields (driver, GPU, plugins, OS); rules add the fields of their toolchains through
``FINGERPRINT_PROVIDERS`` (entry point group ``trtcas.fingerprint``: a callable returning
name -> Field), so the graph names no TensorRT package. A field that cannot be
known here is present with value ``None`` and a reason; the key uses only the value, so a
reworded reason never invalidates a cache.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Mapping

from trtcas.graph import devices
from trtcas.registry import Registry

CUDA_RUNTIME_DISTRIBUTIONS = ("nvidia-cuda-runtime-cu13", "nvidia-cuda-runtime-cu12", "nvidia-cuda-runtime")


@dataclass(frozen=True)
class Field:
    value: Any
    reason: str | None = None  # why value is None


@dataclass(frozen=True)
class Fingerprint:
    fields: Mapping[str, Field] = field(default_factory=dict)

    def value(self, name: str) -> Any:
        if name.startswith("pkg:"):
            return self.fields.get(name, _package_field(name[4:])).value
        return self.fields[name].value if name in self.fields else None

    def select(self, names: tuple[str, ...]) -> dict[str, Any]:
        """The key-relevant values of ``names`` (unknown names count as absent)."""
        return {name: self.value(name) for name in names}

    def with_overrides(self, overrides: Mapping[str, Any]) -> "Fingerprint":
        merged = dict(self.fields)
        merged.update({k: Field(v, None if v is not None else "overridden") for k, v in overrides.items()})
        return Fingerprint(merged)

    def to_dict(self) -> dict[str, Any]:
        return {
            name: (f.value if f.reason is None else {"value": f.value, "absent": f.reason})
            for name, f in sorted(self.fields.items())
        }


def distribution_version(names: tuple[str, ...]) -> Field:
    """The version of the first installed distribution of ``names``, or absent with why."""
    for name in names:
        try:
            return Field(metadata.version(name))
        except metadata.PackageNotFoundError:
            continue
    return Field(None, f"not installed (looked for {', '.join(names)})")


def _package_field(name: str) -> Field:
    return distribution_version((name,))


def _field(reading: devices.Reading) -> Field:
    return Field(reading.value, reading.reason)


def _gpus() -> tuple[Field, Field, Field, Field]:
    """(name, sm, memory MiB, UUID) of the device a build here uses (see trtcas.graph.devices)."""
    device = devices.build_device()
    return tuple(_field(device.reading(a)) for a in ("name", "sm", "memory_mib", "uuid"))  # type: ignore[return-value]


def _plugin_digests() -> Field:
    """sha256 of each plugin library named in TRTCAS_PLUGIN_LIBS (':'-separated)."""
    libs = [p for p in os.environ.get("TRTCAS_PLUGIN_LIBS", "").split(":") if p]
    if not libs:
        return Field([])
    digests = []
    for lib in libs:
        data = Path(lib).read_bytes()
        digests.append(f"{Path(lib).name}:{hashlib.sha256(data).hexdigest()}")
    return Field(sorted(digests))


# name -> callable returning {field name: Field}; rules add their toolchains' versions here.
FINGERPRINT_PROVIDERS: Registry[Callable[[], Mapping[str, Field]]] = Registry(
    "fingerprint provider", entry_point_group="trtcas.fingerprint"
)


@functools.lru_cache(maxsize=1)
def collect_fingerprint() -> Fingerprint:
    """This process's fingerprint (computed once; the environment does not change mid-run)."""
    gpu_name, gpu_sm, gpu_mem, gpu_uuid = _gpus()
    fields = {
        "cuda_runtime_version": distribution_version(CUDA_RUNTIME_DISTRIBUTIONS),
        "cuda_driver_version": _field(devices.driver_version()),
        "cuda_driver_api_version": _field(devices.cuda_driver_api_version()),
        "gpu_name": gpu_name,
        "gpu_sm": gpu_sm,
        "gpu_memory_mib": gpu_mem,
        "gpu_uuid": gpu_uuid,
        "plugins": _plugin_digests(),
        "os": Field(f"{platform.system()} {platform.release()}"),
        "machine": Field(platform.machine()),
        "python": Field(platform.python_version()),
    }
    for provide in FINGERPRINT_PROVIDERS.all().values():
        fields.update(provide())
    return Fingerprint(fields)
