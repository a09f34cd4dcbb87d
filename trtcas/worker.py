"""``trtcas worker start``: join a Ray cluster offering what this host can build.

A host advertises, as Ray custom resources (names in ``graph.placement``), every TensorRT
flavour it has at its exact version, and every SM it can build engines for: a GPU host its
GPU's SM (plus the AOT targets of a flavour that has them), a CPU-only TensorRT-RTX host the
AOT targets. ``--sm`` narrows the list (to split a fleet's work, or to fake a fleet on one
machine in tests). Versions come from the same fingerprint that keys engines, so routing
and keys can never disagree about which toolchain a host has.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from trtcas.errors import TrtcasError
from trtcas.graph.placement import flavour_resource, offered_resources, sm_resource


@dataclass(frozen=True)
class HostOffer:
    """What this host can build: flavour -> exact version, and SMs."""

    flavours: Mapping[str, str]
    sms: tuple[str, ...]

    def resources(self) -> dict[str, float]:
        names = [flavour_resource(f, v) for f, v in sorted(self.flavours.items())] + [sm_resource(s) for s in self.sms]
        return offered_resources(names)


def host_offer(narrow: tuple[str, ...] = ()) -> HostOffer:
    """Probe the installed flavours (``rules.trt.backend``); ``narrow`` keeps only those SMs."""
    from trtcas.graph.fingerprint import collect_fingerprint
    from trtcas.rules.trt.backend import FLAVOURS, load_backend

    fingerprint = collect_fingerprint()
    flavours: dict[str, str] = {}
    sms: set[str] = set()
    for flavour in FLAVOURS:
        try:
            caps = load_backend(flavour).capabilities
        except TrtcasError:
            continue
        version = fingerprint.value(f"{flavour}_version")
        if not version:
            continue
        flavours[flavour] = str(version)
        if caps.builds_without_gpu:
            sms.update(caps.aot_targets)
        if caps.gpu_target and (not caps.aot_targets or caps.gpu_target in caps.aot_targets):
            sms.add(caps.gpu_target)
    if not flavours:
        raise TrtcasError("no TensorRT flavour is installed on this host, so it cannot build anything; "
                          "pip install tensorrt-rtx-cu13 (or tensorrt from NVIDIA's index)")
    wanted = tuple(dict.fromkeys(s.strip().lower() for s in narrow))
    unknown = [s for s in wanted if s not in sms]
    if unknown:
        raise TrtcasError(f"--sm {', '.join(unknown)}: this host cannot build for it (it can: {', '.join(sorted(sms)) or 'nothing'})")
    return HostOffer(flavours, tuple(sorted(wanted or sms)))


def ray_start_command(address: str, offer: HostOffer, num_cpus: int | None, block: bool) -> list[str]:
    beside = Path(sys.executable).parent / "ray"
    ray = str(beside) if beside.exists() else shutil.which("ray")
    if ray is None:
        raise TrtcasError("the ray command is not installed; pip install 'trtcas[ray]'")
    command = [ray, "start", "--address", address, "--resources", json.dumps(offer.resources(), sort_keys=True)]
    if num_cpus is not None:
        command += ["--num-cpus", str(num_cpus)]
    return command + (["--block"] if block else [])


def start_worker(address: str, sms: tuple[str, ...] = (), cache_dir: str | None = None, num_cpus: int | None = None,
                 block: bool = False, dry_run: bool = False) -> int:
    """Run ``ray start`` for this host (or, with ``dry_run``, print what it would run)."""
    if not address.strip():
        raise TrtcasError("--address is empty; give the head's address, e.g. 10.0.0.1:6379")
    offer = host_offer(sms)
    command = ray_start_command(address, offer, num_cpus, block)
    print(json.dumps({"command": command, "resources": offer.resources(), "cache_dir": cache_dir}, indent=2, sort_keys=True))
    if dry_run:
        return 0
    env = dict(os.environ)
    if cache_dir:
        env["TRTCAS_CACHE_DIR"] = str(Path(cache_dir).expanduser().absolute())  # the workers' local cache
    try:
        return subprocess.call(command, env=env)
    except OSError as exc:
        raise TrtcasError(f"cannot run {command[0]}: {exc.strerror}") from None
