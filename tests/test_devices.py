"""trtcas.graph.devices: the driver and the build device, with fake drivers and device lists.

The fakes live here: ``FakeLibcuda`` stands in for ``libcuda.so.1`` behind ``ctypes`` (it
applies CUDA_VISIBLE_DEVICES as CUDA does, in its own simple way, so the real ``CudaDriver``
code is what is tested), ``ListedDevices`` for a physical source (NVML, nvidia-smi).
"""

from __future__ import annotations

import os
import stat
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trtcas.graph import devices, fingerprint
from trtcas.graph.devices import (
    BuildDevice,
    CudaDriver,
    Device,
    NvidiaSmi,
    Nvml,
    Unavailable,
    VersionFile,
    build_device,
    cuda_driver_api_version,
    driver_version,
    parse_proc_driver_version,
    visible_devices,
)

DATA = Path(__file__).parent / "data" / "nvidia_driver_version"
UUID_A100 = "GPU-8f6b2c1e-0d3a-4b5c-9e7f-112233445566"
UUID_L4 = "GPU-1c2d3e4f-5a6b-4c7d-8e9f-aabbccddeeff"
A100 = Device(0, "NVIDIA A100-SXM4-80GB", "sm80", 81920, UUID_A100)
L4 = Device(1, "NVIDIA L4", "sm89", 23034, UUID_L4)
MIXED = (A100, L4)
PCI_ORDER = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}


# ---- fakes ------------------------------------------------------------------------------


@dataclass
class FakeLibcuda:
    """A libcuda with ``physical`` GPUs; CUDA_VISIBLE_DEVICES read from ``env`` at cuInit."""

    physical: tuple[Device, ...]
    env: dict = field(default_factory=dict)
    api: int = 13000
    visible: list = field(default_factory=list)

    def _select(self) -> list[Device]:
        raw = self.env.get("CUDA_VISIBLE_DEVICES")
        if raw is None:
            return list(self.physical)
        chosen = []
        for entry in raw.split(","):
            match = [d for d in self.physical if entry in (str(d.index), d.uuid)]
            if not match or match[0] in chosen:
                break
            chosen.append(match[0])
        return chosen

    def cuInit(self, flags):
        self.visible = self._select()
        return 0 if self.visible else 100

    def cuDriverGetVersion(self, out):
        out._obj.value = self.api
        return 0

    def cuDeviceGetCount(self, out):
        out._obj.value = len(self.visible)
        return 0

    def cuDeviceGet(self, out, ordinal):
        if ordinal >= len(self.visible):
            return 101  # CUDA_ERROR_INVALID_DEVICE
        out._obj.value = ordinal
        return 0

    def cuDeviceGetName(self, buf, size, handle):
        buf.value = self.visible[handle.value].name.encode()[: size - 1]
        return 0

    def cuDeviceGetAttribute(self, out, attribute, handle):
        sm = self.visible[handle.value].sm[2:]
        out._obj.value = {75: int(sm[:-1]), 76: int(sm[-1])}[attribute]
        return 0

    def cuDeviceTotalMem_v2(self, out, handle):
        out._obj.value = self.visible[handle.value].memory_mib << 20
        return 0

    def cuDeviceGetUuid_v2(self, buf, handle):
        buf.raw = bytes.fromhex(self.visible[handle.value].uuid[4:].replace("-", ""))
        return 0

    def cuGetErrorName(self, status, out):
        out._obj.value = {100: b"CUDA_ERROR_NO_DEVICE", 101: b"CUDA_ERROR_INVALID_DEVICE"}.get(status, b"CUDA_ERROR_UNKNOWN")
        return 0


def fake_cuda(physical=MIXED, env=None) -> CudaDriver:
    lib = FakeLibcuda(tuple(physical), dict(env or {}))
    return CudaDriver(load=lambda name: lib)


def no_cuda() -> CudaDriver:
    def load(name):
        raise OSError(f"{name}: cannot open shared object file")

    return CudaDriver(load=load)


@dataclass(frozen=True)
class ListedDevices:
    """A physical source (like NVML): lists every GPU in PCI order, applies no visibility."""

    listed: tuple[Device, ...] = ()
    unavailable: str | None = None
    label: str = "fake NVML"
    applies_visibility: bool = False

    def devices(self):
        if self.unavailable:
            raise Unavailable(self.unavailable)
        return self.listed


@dataclass(frozen=True)
class NeverAsked:
    label: str = "never"
    applies_visibility: bool = True

    def devices(self):
        raise AssertionError("this source must not be asked")

    def driver_version(self):
        raise AssertionError("this source must not be asked")


@dataclass(frozen=True)
class FixedDriver:
    version: str | None
    label: str = "fake NVML"

    def driver_version(self):
        if self.version is None:
            raise Unavailable("nvmlInit failed (Driver Not Loaded)")
        return self.version


# ---- driver version ---------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(DATA.glob("*.txt")), ids=lambda p: p.stem)
def test_proc_driver_version_of_real_hosts(path):
    assert parse_proc_driver_version(path.read_text()) == path.stem.rsplit("-", 1)[1]


@pytest.mark.parametrize("text", ["", "GCC version:  gcc version 12.2.0 (GCC)\n", "NVRM version: garbled\n",
                                  "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64\n"])
def test_proc_text_without_a_version_gives_none(text):
    assert parse_proc_driver_version(text) is None


def test_driver_version_from_open_module_proc_when_nvml_cannot_answer(tmp_path):
    proc = tmp_path / "version"
    proc.write_text((DATA / "open-x86_64-565.57.01.txt").read_text())
    reading = driver_version([FixedDriver(None), VersionFile(tmp_path / "missing", devices._parse_sys_version),
                              VersionFile(proc, parse_proc_driver_version)])
    assert reading.value == "565.57.01" and reading.source == str(proc) and reading.reason is None


def test_driver_version_from_proprietary_proc(tmp_path):
    proc = tmp_path / "version"
    proc.write_text((DATA / "proprietary-x86_64-515.76.txt").read_text())
    assert driver_version([VersionFile(proc, parse_proc_driver_version)]).value == "515.76"


def test_driver_version_prefers_nvml_then_sys_module(tmp_path):
    sys_version = tmp_path / "sys_version"
    sys_version.write_text("580.159.04\n")
    assert driver_version([FixedDriver("580.159.04"), NeverAsked()]).source == "fake NVML"
    reading = driver_version([FixedDriver(None), VersionFile(sys_version, devices._parse_sys_version), NeverAsked()])
    assert (reading.value, reading.source) == ("580.159.04", str(sys_version))


def test_no_driver_gives_absent_with_every_reason(tmp_path):
    reading = driver_version([FixedDriver(None), VersionFile(tmp_path / "none", parse_proc_driver_version)])
    assert reading.value is None
    assert "Driver Not Loaded" in reading.reason and "no NVIDIA kernel module" in reading.reason


def test_unparsable_proc_says_what_it_read(tmp_path):
    proc = tmp_path / "version"
    proc.write_text("NVRM version: something new\n")
    reading = driver_version([VersionFile(proc, parse_proc_driver_version)])
    assert reading.value is None and "something new" in reading.reason


def test_cuda_driver_api_version_is_its_own_fact():
    assert cuda_driver_api_version(fake_cuda()).value == 13000
    # the API version answers even when no device is visible (it needs no cuInit)
    assert cuda_driver_api_version(fake_cuda(env={"CUDA_VISIBLE_DEVICES": ""})).value == 13000
    absent = cuda_driver_api_version(no_cuda())
    assert absent.value is None and "libcuda.so.1 not found" in absent.reason


# ---- the build device through the CUDA driver API ---------------------------------------


def test_cuda_visible_devices_1_on_a_mixed_host_reports_device_1():
    env = {"CUDA_VISIBLE_DEVICES": "1"}
    device = build_device([fake_cuda(env=env), NeverAsked()], env=env)
    assert device.device.sm == "sm89" and device.device.name == "NVIDIA L4"
    assert device.device.uuid == UUID_L4 and device.device.memory_mib == 23034
    assert (device.cuda_index, device.source) == (0, "CUDA driver API")


def test_unset_cuda_visible_devices_is_cuda_device_0():
    device = build_device([fake_cuda(), NeverAsked()], env={})
    assert device.device == A100


def test_cuda_visible_devices_by_uuid_list():
    env = {"CUDA_VISIBLE_DEVICES": f"{UUID_L4},{UUID_A100}"}
    assert build_device([fake_cuda(env=env)], env=env).device.uuid == UUID_L4


@pytest.mark.parametrize("value", ["", "-1", "NoDevFiles", "7"])
def test_cuda_hiding_every_gpu_is_believed(value):
    env = {"CUDA_VISIBLE_DEVICES": value}
    device = build_device([fake_cuda(env=env), NeverAsked()], env=env)
    assert device.device is None and "no GPU visible" in device.reason
    assert device.reading("sm").value is None and device.reading("uuid").reason == device.reason


def test_no_driver_anywhere_gives_reasons_from_each_source():
    device = build_device([no_cuda(), ListedDevices(unavailable="pynvml not installed")], env={})
    assert device.device is None
    assert "libcuda.so.1 not found" in device.reason and "pynvml not installed" in device.reason


def test_assume_no_gpu_asks_no_source():
    device = build_device([NeverAsked()], env={"TRTCAS_ASSUME_NO_GPU": "1"})
    assert device == BuildDevice(None, reason="TRTCAS_ASSUME_NO_GPU=1")


def test_failing_cuda_call_falls_back_to_the_next_source():
    lib = FakeLibcuda(MIXED)
    lib.cuDeviceTotalMem_v2 = lambda out, handle: 999
    env = {"CUDA_VISIBLE_DEVICES": "1", **PCI_ORDER}
    device = build_device([CudaDriver(load=lambda name: lib), ListedDevices(MIXED)], env=env)
    assert device.source == "fake NVML" and device.device.sm == "sm89" and device.physical_index == 1


# ---- the build device from a physical source (NVML, nvidia-smi) --------------------------


def _physical(value: str | None, physical=MIXED, **env) -> BuildDevice:
    environ = dict(env)
    if value is not None:
        environ["CUDA_VISIBLE_DEVICES"] = value
    return build_device([no_cuda(), ListedDevices(tuple(physical))], env=environ)


def test_physical_source_maps_an_index_in_pci_order():
    device = _physical("1", **PCI_ORDER)
    assert (device.device.sm, device.cuda_index, device.physical_index) == ("sm89", 0, 1)


def test_physical_source_refuses_an_ambiguous_index_on_mixed_gpus():
    device = _physical("1")  # CUDA's default FASTEST_FIRST order may put the L4 anywhere
    assert device.device is None and "ambiguous" in device.reason and "PCI_BUS_ID" in device.reason


def test_physical_source_maps_an_index_on_alike_gpus_without_pci_order():
    twins = (A100, Device(1, A100.name, "sm80", 81920, UUID_L4))
    assert _physical("1", twins).device.uuid == UUID_L4


def test_physical_source_maps_uuids_and_unique_prefixes():
    assert _physical(f"{UUID_L4},{UUID_A100}").device == L4
    assert _physical("GPU-1c2d").device == L4
    assert _physical("gpu-8F6B").device == A100  # CUDA compares UUIDs case-insensitively


@pytest.mark.parametrize("value, reason", [
    ("", "hides every GPU"), ("-1", "hides every GPU"), ("NoDevFiles", "hides every GPU"),
    ("2", "no GPU 2"), ("GPU-", "matches 2 GPUs"), ("GPU-ffff", "matches 0 GPUs"),
    ("MIG-GPU-8f6b2c1e-0d3a-4b5c-9e7f-112233445566/1/0", "MIG"),
    ("MIG-4a5b6c7d-0000-1111-2222-333344445555", "MIG"),
])
def test_physical_source_invalid_lists_hide_every_gpu(value, reason):
    device = _physical(value, **PCI_ORDER)
    assert device.device is None and reason in device.reason


@pytest.mark.parametrize("value, expected", [
    ("0,-1,1", A100), ("1,1", L4), ("1,bogus,0", L4), ("1,", L4), (" 1 , 0", L4),
])
def test_cuda_keeps_the_devices_before_the_first_invalid_entry(value, expected):
    assert _physical(value, **PCI_ORDER).device == expected
    assert visible_devices(MIXED, {"CUDA_VISIBLE_DEVICES": value, **PCI_ORDER}).devices[0] == expected


def test_physical_source_with_no_gpu():
    device = _physical(None, physical=())
    assert device.device is None and "no GPU found" in device.reason


uuids = st.uuids().map(lambda u: f"GPU-{u}")
device_lists = st.lists(st.tuples(st.sampled_from([("A100", "sm80"), ("L4", "sm89"), ("H200", "sm90")]), uuids),
                        max_size=4, unique_by=lambda t: t[1]).map(
    lambda rows: tuple(Device(i, name, sm, 1024, uuid) for i, ((name, sm), uuid) in enumerate(rows)))
entries = st.one_of(st.integers(-2, 5).map(str), st.sampled_from(["", "NoDevFiles", "GPU-", "MIG-x", "x"]), uuids)


@settings(max_examples=300, deadline=None)
@given(device_lists, st.lists(entries, max_size=4).map(",".join), st.sampled_from(["PCI_BUS_ID", "FASTEST_FIRST"]))
def test_visible_devices_never_crashes_and_picks_distinct_listed_devices(physical, value, order):
    visibility = visible_devices(physical, {"CUDA_VISIBLE_DEVICES": value, "CUDA_DEVICE_ORDER": order})
    chosen = [d.index for d in visibility.devices]
    assert len(chosen) == len(set(chosen)) and all(d in physical for d in visibility.devices)
    assert bool(visibility.devices) != bool(visibility.reason)


# ---- the real source classes against fake libraries and tools ---------------------------


def test_nvml_source_through_a_fake_pynvml(monkeypatch):
    class Memory:
        total = 143771 << 20

    fake = types.SimpleNamespace(
        NVMLError=type("NVMLError", (Exception,), {}),
        nvmlInit=lambda: None,
        nvmlSystemGetDriverVersion=lambda: b"580.159.04",  # old pynvml returns bytes
        nvmlDeviceGetCount=lambda: 2,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetCudaComputeCapability=lambda h: (9, 0),
        nvmlDeviceGetName=lambda h: "NVIDIA H200",
        nvmlDeviceGetMemoryInfo=lambda h: Memory,
        nvmlDeviceGetUUID=lambda h: [UUID_A100, UUID_L4][h],
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert Nvml().driver_version() == "580.159.04"
    device = build_device([Nvml()], env={"CUDA_VISIBLE_DEVICES": "1"})
    assert device.device == Device(1, "NVIDIA H200", "sm90", 143771, UUID_L4)


def test_nvml_source_without_pynvml(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    with pytest.raises(Unavailable, match="nvidia-ml-py"):
        Nvml().devices()


def test_nvidia_smi_source_parses_its_csv(tmp_path, monkeypatch):
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\ncase \"$1\" in\n  *driver_version*) echo '580.159.04'; echo '580.159.04';;\n"
                   f"  *) echo '0, NVIDIA A100-SXM4-80GB, 8.0, 81920, {UUID_A100}';"
                   f" echo '1, NVIDIA L4, 8.9, 23034, {UUID_L4}';;\nesac\n")
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert NvidiaSmi().driver_version() == "580.159.04"
    assert build_device([NvidiaSmi()], env={"CUDA_VISIBLE_DEVICES": UUID_L4}).device == L4


def test_nvidia_smi_missing(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(Unavailable, match="not found"):
        NvidiaSmi().devices()


def test_uuid_is_formatted_as_nvidia_smi_does():
    assert devices.format_uuid(bytes(range(16))) == "GPU-00010203-0405-0607-0809-0a0b0c0d0e0f"


# ---- the fingerprint uses all this ------------------------------------------------------


@pytest.fixture
def fresh_fingerprint():
    fingerprint.collect_fingerprint.cache_clear()
    yield fingerprint.collect_fingerprint
    fingerprint.collect_fingerprint.cache_clear()


def test_fingerprint_reports_the_visible_device_and_driver(monkeypatch, fresh_fingerprint, tmp_path):
    env = {"CUDA_VISIBLE_DEVICES": "1"}
    monkeypatch.delenv("TRTCAS_ASSUME_NO_GPU", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    monkeypatch.setattr(devices, "default_device_sources", lambda: (fake_cuda(env=env),))
    monkeypatch.setattr(devices, "default_driver_sources", lambda: (FixedDriver("580.159.04"),))
    monkeypatch.setattr(devices, "CudaDriver", lambda: fake_cuda(env=env))
    fp = fresh_fingerprint()
    assert fp.select(("cuda_driver_version", "gpu_name", "gpu_sm", "gpu_memory_mib", "gpu_uuid", "cuda_driver_api_version")) == {
        "cuda_driver_version": "580.159.04", "gpu_name": "NVIDIA L4", "gpu_sm": "sm89",
        "gpu_memory_mib": 23034, "gpu_uuid": UUID_L4, "cuda_driver_api_version": 13000,
    }


def test_fingerprint_without_gpu_keeps_every_field_absent_with_a_reason(monkeypatch, fresh_fingerprint):
    monkeypatch.setenv("TRTCAS_ASSUME_NO_GPU", "1")
    wire = fresh_fingerprint().to_dict()
    for name in ("gpu_name", "gpu_sm", "gpu_memory_mib", "gpu_uuid"):
        assert wire[name] == {"value": None, "absent": "TRTCAS_ASSUME_NO_GPU=1"}


# ---- a real GPU, when there is one -------------------------------------------------------


def _real_cuda_devices():
    try:
        return CudaDriver().devices()
    except Unavailable as exc:
        pytest.skip(f"no CUDA driver here ({exc})")


@pytest.mark.gpu
def test_real_cuda_device_agrees_with_nvml_by_uuid():
    listed = _real_cuda_devices()
    if not listed:
        pytest.skip("no GPU visible")
    try:
        physical = Nvml().devices()
    except Unavailable as exc:
        pytest.skip(str(exc))
    first = listed[0]
    (same,) = [d for d in physical if d.uuid == first.uuid]
    assert (same.name, same.sm) == (first.name, first.sm)
    assert abs(same.memory_mib - first.memory_mib) <= 1024  # NVML and CUDA may count reserved memory differently
