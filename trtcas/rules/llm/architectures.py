"""The model architectures trtcas converts and writes networks for, by HF name.

An architecture is one folder under ``rules/llm/`` (``llama/``: config, convert, network)
and one entry in ``ARCHITECTURES`` (entry point group ``trtcas.architectures``, name = the
HF ``architectures[0]`` / TensorRT-LLM ``architecture`` string). Nothing else in trtcas
names an architecture, so adding one is adding a folder and an entry point.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from trtcas.errors import TrtcasError
from trtcas.registry import Registry, UnknownEntry


@dataclass(frozen=True)
class Architecture:
    """What trtcas knows of one architecture; every field is a function of that folder."""

    name: str
    # (HF config, where it was read) -> None; refuses fields that change the math but are
    # not implemented, in one line naming them.
    check_hf_config: Callable[[Mapping[str, Any], Path], None]
    # (HF config, ConvertSpec, rank) -> ConvertSteps of the rank's file, in order; reads no tensor.
    plan_rank: Callable[..., tuple]
    # (HFCheckpoint, HF config, ConvertSpec, rank, step) -> (name, array) outputs of the step.
    run_step: Callable[..., Iterator[tuple[str, np.ndarray]]]
    # (HF config, ConvertSpec) -> the TensorRT-LLM checkpoint's config.json.
    trtllm_config: Callable[[Mapping[str, Any], Any], dict]
    # (backend, TensorRT-LLM config, rank, weights, max_batch_size, max_seq_len, **options)
    # -> a ParsedNetwork of the rank, written with TensorRT's layers.
    build_network: Callable[..., Any]


ARCHITECTURES: Registry[Architecture] = Registry("model architecture", entry_point_group="trtcas.architectures")


def architecture(name: str, where: str = "the model config") -> Architecture:
    """The architecture called ``name``; one line naming the supported ones otherwise."""
    try:
        return ARCHITECTURES.get(name)
    except UnknownEntry:
        supported = ", ".join(ARCHITECTURES.names()) or "none"
        raise TrtcasError(f"{where}: architecture {name!r} is not supported (supported: {supported})") from None
