"""The NVIDIA driver and the GPU that a build in this process will use, read without TensorRT.

Why a module of its own: a non-AOT engine is compiled for one device, so its key must carry the
SM of *that* device and the driver that compiles for it. "That device" is CUDA ordinal 0 of this
process, which ``CUDA_VISIBLE_DEVICES`` chooses; ``nvidia-smi -i 0`` ignores the variable and
describes physical GPU 0, so on a host with mixed GPUs it names the wrong SM: a silently wrong
key. Hence the sources, in the order they are asked:

1. the CUDA driver API (``libcuda.so.1`` through ctypes): it applies ``CUDA_VISIBLE_DEVICES``
   itself, exactly as the build will, so its ordinal 0 is the build device by construction;
2. NVML (``pynvml``, from the optional ``nvidia-ml-py``), which lists physical GPUs with their
   UUIDs; we apply ``CUDA_VISIBLE_DEVICES`` ourselves (``visible_devices``);
3. ``nvidia-smi``, likewise physical, as a last resort.

The driver version (``580.159.04``) comes from NVML, then ``/sys/module/nvidia/version``, then
``/proc/driver/nvidia/version`` (whose first line differs between the proprietary and the open
kernel module), then ``nvidia-smi``. ``cuDriverGetVersion`` gives another fact (the CUDA API
version the driver implements, ``13000``), exposed as ``cuda_driver_api_version``.

Every answer is a ``Reading``: a value, or None with the reason, so ``trtcas env`` can say why.
Sources are small objects behind two protocols, so tests hand in fake drivers and device lists
(the fakes live in the tests, not here). Calling ``cuInit`` in this process is no new hazard:
the TensorRT build that follows initialises CUDA in this process anyway.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

ASSUME_NO_GPU_ENV = "TRTCAS_ASSUME_NO_GPU"
VISIBLE_ENV = "CUDA_VISIBLE_DEVICES"
ORDER_ENV = "CUDA_DEVICE_ORDER"
PROC_VERSION = Path("/proc/driver/nvidia/version")
SYS_MODULE_VERSION = Path("/sys/module/nvidia/version")
_TRUE = ("1", "true", "yes", "on")

# CUdevice_attribute values (cuda.h): stable since CUDA 2.x/3.x.
_ATTR_CC_MAJOR = 75
_ATTR_CC_MINOR = 76
_CUDA_ERROR_NO_DEVICE = 100

# "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 ..." (proprietary),
# "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build ..." (open):
# the version is the first whitespace-delimited dotted number on the NVRM line, wherever the
# words before it put it.
_NVRM_VERSION = re.compile(r"^NVRM version:.*?\s(\d+(?:\.\d+)+)(?=\s|$)", re.MULTILINE)
_SYS_VERSION = re.compile(r"^\s*(\d+(?:\.\d+)+)\s*$")


class Unavailable(Exception):
    """A source cannot answer here; the message is the reason shown to the user."""


@dataclass(frozen=True)
class Reading:
    """A fact about this machine, or None with the reason it is not known.

    ``source`` says which path answered (for ``trtcas env`` and bug reports, never for keys).
    """

    value: Any
    source: str | None = None
    reason: str | None = None

    @classmethod
    def absent(cls, reason: str) -> Reading:
        return cls(None, None, reason)


@dataclass(frozen=True)
class Device:
    """One GPU as a source lists it.

    ``index`` is the source's own enumeration: the CUDA ordinal in this process for the CUDA
    driver API, the physical (PCI bus order) index for NVML and nvidia-smi.
    """

    index: int
    name: str
    sm: str  # "sm90"
    memory_mib: int
    uuid: str | None  # "GPU-8f6b...", as nvidia-smi and CUDA_VISIBLE_DEVICES spell it


@dataclass(frozen=True)
class BuildDevice:
    """The device a build in this process will use (CUDA ordinal 0), or why there is none.

    ``cuda_index`` is always 0 when known (what the build sees); ``physical_index`` is the
    device's index as NVML/nvidia-smi number it, when the source knows it.
    """

    device: Device | None
    source: str | None = None
    reason: str | None = None
    cuda_index: int | None = None
    physical_index: int | None = None

    def reading(self, attribute: str) -> Reading:
        """One attribute of the device (``name``, ``sm``, ``memory_mib``, ``uuid``) as a Reading."""
        if self.device is None:
            return Reading.absent(self.reason or "no GPU")
        value = getattr(self.device, attribute)
        if value is None:
            return Reading(None, self.source, f"{self.source} does not report the {attribute}")
        return Reading(value, self.source)


class DeviceSource(Protocol):
    """Somewhere to list GPUs from."""

    label: str
    # True: ``devices()`` is already CUDA's view of this process (CUDA_VISIBLE_DEVICES applied,
    # CUDA's order). False: physical devices, to which ``visible_devices`` applies the variable.
    applies_visibility: bool

    def devices(self) -> Sequence[Device]:
        """The devices, in the source's order; raises ``Unavailable`` with the reason."""
        ...


class DriverVersionSource(Protocol):
    """Somewhere to read the driver version (``580.159.04``) from."""

    label: str

    def driver_version(self) -> str:
        """The version; raises ``Unavailable`` with the reason."""
        ...


# ---- parsing, no I/O ---------------------------------------------------------------------


def parse_proc_driver_version(text: str) -> str | None:
    """The driver version in the text of ``/proc/driver/nvidia/version``, any module flavour."""
    match = _NVRM_VERSION.search(text)
    return match[1] if match else None


def format_uuid(raw: bytes) -> str:
    """16 bytes of ``CUuuid`` as ``GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`` (nvidia-smi's form)."""
    h = raw.hex()
    return f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def sm_of(major: int, minor: int) -> str:
    return f"sm{major}{minor}"


def assume_no_gpu(env: Mapping[str, str]) -> bool:
    return env.get(ASSUME_NO_GPU_ENV, "").strip().lower() in _TRUE


@dataclass(frozen=True)
class Visibility:
    """What ``CUDA_VISIBLE_DEVICES`` selects: the physical devices in CUDA order, or why none."""

    devices: tuple[Device, ...]
    reason: str | None = None  # set when the selection is empty or cannot be resolved


def visible_devices(physical: Sequence[Device], env: Mapping[str, str]) -> Visibility:
    """Apply ``CUDA_VISIBLE_DEVICES`` to physical devices the way CUDA does.

    Unset: all devices. Otherwise a comma-separated list of indices or ``GPU-`` UUIDs (a
    unique prefix is enough); CUDA stops at the first entry that is invalid, names no device,
    or repeats one, so ``""``, ``"-1"`` and ``"NoDevFiles"`` hide every GPU. MIG entries
    (``MIG-...``) name a slice of a GPU whose properties only CUDA itself reports: they are
    answered with a reason rather than guessed.

    Indices here are physical (PCI bus) indices, which is what CUDA uses only with
    ``CUDA_DEVICE_ORDER=PCI_BUS_ID``; its default ``FASTEST_FIRST`` can reorder unlike GPUs,
    so an index on a host of mixed GPUs without that setting is reported as ambiguous.
    """
    raw = env.get(VISIBLE_ENV)
    if raw is None:
        return Visibility(tuple(physical)) if physical else Visibility((), "no GPU found")
    chosen: list[Device] = []
    for entry in (part.strip() for part in raw.split(",")):
        device, why_stop = _resolve_entry(entry, physical, raw, env)
        if why_stop:
            if chosen:
                break  # CUDA keeps the devices listed before the first invalid entry
            return Visibility((), why_stop)
        if any(d.index == device.index for d in chosen):
            break  # a repeated device is invalid to CUDA too
        chosen.append(device)
    return Visibility(tuple(chosen))


def _resolve_entry(entry: str, physical: Sequence[Device], raw: str, env: Mapping[str, str]) -> tuple[Device | None, str | None]:
    shown = f"{VISIBLE_ENV}={raw!r}"
    if entry.upper().startswith("MIG-"):
        return None, f"{shown} names a MIG instance; only the CUDA driver API can describe it"
    if entry.upper().startswith("GPU-"):
        matches = [d for d in physical if d.uuid and d.uuid.lower().startswith(entry.lower())]
        if len(matches) != 1:
            return None, f"{shown}: {entry!r} matches {len(matches)} GPUs (no GPU visible to CUDA)"
        return matches[0], None
    if not entry.isdigit():
        return None, f"{shown} hides every GPU"
    index = int(entry)
    if index >= len(physical):
        return None, f"{shown}: no GPU {index} (this host has {len(physical)})"
    if env.get(ORDER_ENV, "FASTEST_FIRST").strip().upper() != "PCI_BUS_ID" and len({(d.name, d.sm) for d in physical}) > 1:
        return None, (f"{shown} on a host of unlike GPUs: CUDA's default order (FASTEST_FIRST) may differ"
                      f" from NVML's, so index {index} is ambiguous; set {ORDER_ENV}=PCI_BUS_ID or use a UUID")
    return physical[index], None


# ---- what the module answers ------------------------------------------------------------


def build_device(sources: Sequence[DeviceSource] | None = None, env: Mapping[str, str] | None = None) -> BuildDevice:
    """The device a build in this process will use: the first source that can answer wins.

    A source that answers "no device" is believed (it saw the driver); one that cannot run
    (no library, no binary) passes the question on. ``TRTCAS_ASSUME_NO_GPU=1`` pretends no GPU.
    """
    env = os.environ if env is None else env
    if assume_no_gpu(env):
        return BuildDevice(None, reason=f"{ASSUME_NO_GPU_ENV}=1")
    sources = default_device_sources() if sources is None else sources
    failures = []
    for source in sources:
        try:
            listed = list(source.devices())
        except Unavailable as exc:
            failures.append(f"{source.label}: {exc}")
            continue
        if source.applies_visibility:
            if not listed:
                return BuildDevice(None, source.label, f"{source.label}: no GPU visible to this process")
            return BuildDevice(listed[0], source.label, cuda_index=0)
        visible = visible_devices(listed, env)
        if not visible.devices:
            return BuildDevice(None, source.label, f"{source.label}: {visible.reason}")
        first = visible.devices[0]
        return BuildDevice(first, source.label, cuda_index=0, physical_index=first.index)
    return BuildDevice(None, reason="no GPU found (" + "; ".join(failures) + ")" if failures else "no GPU source")


def driver_version(sources: Sequence[DriverVersionSource] | None = None) -> Reading:
    """The NVIDIA driver version (``580.159.04``): the first source that can tell."""
    sources = default_driver_sources() if sources is None else sources
    failures = []
    for source in sources:
        try:
            return Reading(source.driver_version(), source.label)
        except Unavailable as exc:
            failures.append(f"{source.label}: {exc}")
    return Reading.absent("no NVIDIA driver found (" + "; ".join(failures) + ")")


def cuda_driver_api_version(cuda: CudaDriver | None = None) -> Reading:
    """The CUDA API version the driver implements (``13000`` for CUDA 13.0), from ``cuDriverGetVersion``."""
    cuda = CudaDriver() if cuda is None else cuda
    try:
        return Reading(cuda.api_version(), cuda.label)
    except Unavailable as exc:
        return Reading.absent(f"{cuda.label}: {exc}")


def default_device_sources() -> tuple[DeviceSource, ...]:
    return (CudaDriver(), Nvml(), NvidiaSmi())


def default_driver_sources() -> tuple[DriverVersionSource, ...]:
    return (Nvml(), VersionFile(SYS_MODULE_VERSION, _parse_sys_version), VersionFile(PROC_VERSION, parse_proc_driver_version), NvidiaSmi())


# ---- the real sources -------------------------------------------------------------------


class CudaDriver:
    """The CUDA driver API through ctypes: what this process's CUDA, hence the build, sees."""

    label = "CUDA driver API"
    applies_visibility = True

    def __init__(self, library: str | None = None, load: Callable[[str], Any] = ctypes.CDLL):
        """``load`` opens the library (``ctypes.CDLL``); tests pass a fake driver instead."""
        self.library = library or ("nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1")
        self._load = load

    def _open(self) -> Any:
        try:
            return self._load(self.library)
        except OSError:
            raise Unavailable(f"{self.library} not found (no NVIDIA driver)") from None

    def _call(self, cuda: Any, name: str, *args: Any) -> None:
        try:
            status = getattr(cuda, name)(*args)
        except AttributeError:
            raise Unavailable(f"{self.library} has no {name}") from None
        if status != 0:
            raise _CudaStatus(status, f"{name} failed: {_cuda_error_name(cuda, status)} ({status})")

    def api_version(self) -> int:
        """cuDriverGetVersion needs no cuInit, so a driver with no visible device answers too."""
        cuda, version = self._open(), ctypes.c_int(0)
        self._call(cuda, "cuDriverGetVersion", ctypes.byref(version))
        return version.value

    def devices(self) -> list[Device]:
        cuda = self._open()
        try:
            self._call(cuda, "cuInit", 0)
        except _CudaStatus as exc:
            if exc.status == _CUDA_ERROR_NO_DEVICE:
                return []  # the driver is there and says: nothing visible
            raise Unavailable(str(exc)) from None
        try:
            count = ctypes.c_int(0)
            self._call(cuda, "cuDeviceGetCount", ctypes.byref(count))
            return [self._device(cuda, ordinal) for ordinal in range(count.value)]
        except _CudaStatus as exc:
            raise Unavailable(str(exc)) from None

    def _device(self, cuda: Any, ordinal: int) -> Device:
        handle, major, minor = ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0)
        self._call(cuda, "cuDeviceGet", ctypes.byref(handle), ordinal)
        name = ctypes.create_string_buffer(256)
        self._call(cuda, "cuDeviceGetName", name, len(name), handle)
        self._call(cuda, "cuDeviceGetAttribute", ctypes.byref(major), _ATTR_CC_MAJOR, handle)
        self._call(cuda, "cuDeviceGetAttribute", ctypes.byref(minor), _ATTR_CC_MINOR, handle)
        total = ctypes.c_size_t(0)
        self._call(cuda, "cuDeviceTotalMem_v2", ctypes.byref(total), handle)
        return Device(ordinal, name.value.decode(errors="replace"), sm_of(major.value, minor.value),
                      total.value >> 20, self._uuid(cuda, handle))

    def _uuid(self, cuda: Any, handle: ctypes.c_int) -> str | None:
        raw = ctypes.create_string_buffer(16)
        for name in ("cuDeviceGetUuid_v2", "cuDeviceGetUuid"):
            try:
                self._call(cuda, name, raw, handle)
                return format_uuid(raw.raw)
            except (Unavailable, _CudaStatus):
                continue
        return None


class _CudaStatus(Unavailable):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _cuda_error_name(cuda: Any, status: int) -> str:
    text = ctypes.c_char_p()
    try:
        if cuda.cuGetErrorName(status, ctypes.byref(text)) == 0 and text.value:
            return text.value.decode()
    except AttributeError:
        pass
    return "CUDA error"


class Nvml:
    """NVML through ``pynvml`` (package ``nvidia-ml-py``), imported only when asked."""

    label = "NVML"
    applies_visibility = False

    def _nvml(self) -> Any:
        try:
            import pynvml
        except ImportError:
            raise Unavailable("pynvml not installed (pip install nvidia-ml-py)") from None
        try:
            pynvml.nvmlInit()
        except (pynvml.NVMLError, OSError) as exc:  # NVMLError_LibraryNotFound, _DriverNotLoaded ...
            raise Unavailable(f"nvmlInit failed ({exc})") from None
        return pynvml

    def driver_version(self) -> str:
        nvml = self._nvml()
        try:
            return _text(nvml.nvmlSystemGetDriverVersion())
        except nvml.NVMLError as exc:
            raise Unavailable(f"nvmlSystemGetDriverVersion failed ({exc})") from None

    def devices(self) -> list[Device]:
        nvml = self._nvml()
        try:
            return [self._device(nvml, index) for index in range(nvml.nvmlDeviceGetCount())]
        except nvml.NVMLError as exc:
            raise Unavailable(f"NVML query failed ({exc})") from None

    @staticmethod
    def _device(nvml: Any, index: int) -> Device:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
        return Device(index, _text(nvml.nvmlDeviceGetName(handle)), sm_of(major, minor),
                      int(nvml.nvmlDeviceGetMemoryInfo(handle).total) >> 20, _text(nvml.nvmlDeviceGetUUID(handle)))


class NvidiaSmi:
    """``nvidia-smi``: physical devices in PCI bus order (it ignores CUDA_VISIBLE_DEVICES)."""

    label = "nvidia-smi"
    applies_visibility = False

    def _query(self, fields: str) -> list[list[str]]:
        smi = shutil.which("nvidia-smi")
        if not smi:
            raise Unavailable("nvidia-smi not found")
        try:
            out = subprocess.run([smi, f"--query-gpu={fields}", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=10, check=True).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            raise Unavailable(f"nvidia-smi failed ({type(exc).__name__})") from None
        return [[part.strip() for part in line.split(",")] for line in out.splitlines() if line.strip()]

    def driver_version(self) -> str:
        rows = self._query("driver_version")
        if not rows or not rows[0][0]:
            raise Unavailable("nvidia-smi listed no GPU")
        return rows[0][0]

    def devices(self) -> list[Device]:
        try:
            return [Device(int(i), name, "sm" + cap.replace(".", ""), int(float(mem)), uuid or None)
                    for i, name, cap, mem, uuid in self._query("index,name,compute_cap,memory.total,uuid")]
        except ValueError as exc:
            raise Unavailable(f"unexpected nvidia-smi output ({exc})") from None


@dataclass(frozen=True)
class VersionFile:
    """A driver version read from a file the kernel module writes (``/sys`` or ``/proc``)."""

    path: Path
    parse: Callable[[str], str | None]

    @property
    def label(self) -> str:
        return str(self.path)

    def driver_version(self) -> str:
        try:
            text = self.path.read_text(errors="replace")
        except OSError:
            raise Unavailable("missing (no NVIDIA kernel module loaded)") from None
        version = self.parse(text)
        if not version:
            raise Unavailable(f"no version in {text.splitlines()[0][:120] if text else 'an empty file'!r}")
        return version


def _parse_sys_version(text: str) -> str | None:
    match = _SYS_VERSION.match(text)
    return match[1] if match else None


def _text(value: Any) -> str:
    """pynvml returns str in new releases and bytes in old ones."""
    return value.decode() if isinstance(value, bytes) else str(value)
