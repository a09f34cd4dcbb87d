"""The fingerprint fields of the TensorRT toolchains: each flavour's exact version.

Read from package metadata, never by importing TensorRT, so ``trtcas env`` works anywhere.
Registered as the ``trt`` provider of ``graph.fingerprint.FINGERPRINT_PROVIDERS``.
"""

from __future__ import annotations

from typing import Mapping

from trtcas.graph.fingerprint import Field, distribution_version

# Distribution names under which each flavour is published (first installed one wins).
FLAVOUR_DISTRIBUTIONS = {
    "tensorrt": ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu13-libs", "tensorrt-cu12-libs"),
    "tensorrt_rtx": ("tensorrt-rtx-cu13", "tensorrt-rtx", "tensorrt-rtx-cu12", "tensorrt_rtx_cu13_libs"),
    "tensorrt_llm": ("tensorrt-llm", "tensorrt_llm"),
}


def toolchain_fields() -> Mapping[str, Field]:
    """``<flavour>_version`` for every flavour, absent (with the reason) when not installed."""
    return {f"{flavour}_version": distribution_version(names) for flavour, names in FLAVOUR_DISTRIBUTIONS.items()}
