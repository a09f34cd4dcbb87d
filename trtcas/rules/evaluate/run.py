"""``trtcas run``: evaluate the networks a target builds, every rank together, on given inputs.

The networks are those the target's ``trt.network`` actions produce (built, or taken from the
cache by their keys); each is re-loaded from the action's stored inputs exactly as the engine
action loads it, so what is evaluated is what the engine is built from. Ranks are evaluated
in lock step with their collectives simulated (:func:`evaluate_ranks`).

LLM targets take token ids: they are placed at the start of every batch row of the static
``[max_batch_size, max_seq_len]`` input (the rest padded with token 0, which causal attention
keeps from reaching earlier positions) and the logits of the last given position are
reported, over the model's real vocabulary. Other targets take one array per input.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from trtcas.cas.digest import Digest
from trtcas.errors import TrtcasError

TOKENS_INPUT = "input_ids"
LOGITS_OUTPUT = "logits"


@dataclass(frozen=True)
class RunResult:
    """What ``trtcas run`` reports: rank 0's outputs by name (every rank's are checked to
    agree where they are replicated), the number of ranks, and for token runs the logits of
    the last position and their argmax."""

    outputs: Mapping[str, np.ndarray]
    ranks: int
    logits: np.ndarray | None = None

    @property
    def argmax(self) -> int | None:
        return None if self.logits is None else int(np.argmax(self.logits))

    def to_dict(self) -> dict[str, Any]:
        if self.logits is not None:
            return {"logits": [float(v) for v in self.logits], "argmax": self.argmax, "ranks": self.ranks}
        return {"outputs": {name: {"shape": list(value.shape), "dtype": value.dtype.name, "values": _plain(value)}
                            for name, value in self.outputs.items()},
                "ranks": self.ranks}


def _plain(value: np.ndarray) -> list:
    """Nested Python numbers (bf16 and other float types numpy lacks widened to float)."""
    if value.dtype.kind in "biu":
        return value.tolist()
    return value.astype(np.float64).tolist()


@dataclass(frozen=True)
class _RankNetwork:
    rank: int
    loaded: Any  # LoadedNetwork: keeps the TensorRT objects alive
    trt: Any


def network_actions(graph: Any) -> list[Any]:
    """The target's ``trt.network`` actions, by rank."""
    actions = [graph.nodes[n]["action"] for n in graph.nodes if graph.nodes[n]["action"].rule == "trt.network"]
    if not actions:
        raise TrtcasError("the target has no network to run")
    return sorted(actions, key=lambda a: int(a.params.get("rank", 0)))


def engines_stack_linears(graph: Any) -> dict[str, bool]:
    """Network action id -> whether an engine built from it stacks parallel linears (the
    engine action's ``stack_parallel_linears``): run then checks the network the engine
    was built from, not only the one that was canonicalized."""
    return {node: any(graph.nodes[after]["action"].params.get("stack_parallel_linears", False)
                      for after in graph.successors(node) if graph.nodes[after]["action"].rule == "trt.engine")
            for node in graph.nodes if graph.nodes[node]["action"].rule == "trt.network"}


def load_rank_networks(store: Any, base_dir: Path, actions: Sequence[Any], records: Mapping[str, Any],
                       scratch: Path, engines_stack: Mapping[str, bool] | None = None) -> list[_RankNetwork]:
    """Each network action's network, loaded from the inputs its record names, and written
    as its engines were (``engines_stack``: network action id -> its engines stack
    parallel linears)."""
    from trtcas.graph.context import StoreRunContext
    from trtcas.rules.trt.sources import load_network
    from trtcas.rules.trt.toolchain import load_toolchain

    networks = []
    for action in actions:
        record = records[action.id]
        sources = {name: Path(os.path.normpath(base_dir / ref.path)) for name, ref in action.inputs.items()
                   if ref.path is not None}
        digests = {name: Digest.parse(d) for name, d in record.inputs.items()}
        ctx = StoreRunContext(action, store, sources, digests, scratch / action.id.replace("[", "_").replace("]", ""))
        toolchain = load_toolchain(action.params["backend"])
        writing = {"stack_parallel_linears": (engines_stack or {}).get(action.id, False)}
        networks.append(_RankNetwork(int(action.params.get("rank", 0)), load_network(ctx, toolchain, **writing),
                                     toolchain.backend.trt))
    return networks


def token_feed(network: Any, tokens: Sequence[int]) -> tuple[np.ndarray, int]:
    """The ``input_ids`` feed holding ``tokens`` and the position of the last one."""
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    if [t.name for t in inputs] != [TOKENS_INPUT]:
        raise TrtcasError(f"--tokens needs an LLM network (one input {TOKENS_INPUT!r}); this one takes "
                          f"{', '.join(t.name for t in inputs)}: give --input NAME=FILE.npy")
    batch, seq = (int(d) for d in inputs[0].shape)
    if not tokens:
        raise TrtcasError("--tokens is empty; give token ids like --tokens 1,2,3")
    if seq != -1 and len(tokens) > seq:
        raise TrtcasError(f"{len(tokens)} tokens do not fit max_seq_len={seq}; give fewer or raise [model] max_seq_len")
    rows = 1 if batch == -1 else batch
    ids = np.zeros((rows, len(tokens) if seq == -1 else seq), np.int32)
    ids[:, :len(tokens)] = np.asarray(tokens, np.int64)
    return ids, len(tokens) - 1


def _check_tokens(tokens: Sequence[int], vocab: int | None) -> None:
    if vocab is None:
        return
    bad = [t for t in tokens if not 0 <= t < vocab]
    if bad:
        raise TrtcasError(f"token id(s) {', '.join(map(str, bad[:4]))} are outside the vocabulary 0..{vocab - 1}")


def evaluate_target(store: Any, base_dir: Path, graph: Any, records: Mapping[str, Any], *,
                    tokens: Sequence[int] | None = None, feeds: Mapping[str, np.ndarray] | None = None) -> RunResult:
    """Evaluate every rank's network of a built (or cached) target on ``tokens`` or ``feeds``."""
    from trtcas.rules.evaluate import evaluate_ranks

    if (tokens is None) == (feeds is None):
        raise TrtcasError("give either token ids (--tokens 1,2,3) or input arrays (--input NAME=FILE.npy)")
    with tempfile.TemporaryDirectory(prefix="trtcas-run-") as scratch:
        ranks = load_rank_networks(store, base_dir, network_actions(graph), records, Path(scratch),
                                   engines_stack_linears(graph))
        first = ranks[0].loaded.parsed.network
        position = None
        if tokens is not None:
            ids, position = token_feed(first, tokens)
            _check_tokens(tokens, _real_vocab(ranks[0].loaded.parsed, None))
            feeds = {TOKENS_INPUT: ids}
        constants = [dict(r.loaded.weight_arrays) for r in ranks]
        outputs = evaluate_ranks(ranks[0].trt, [r.loaded.parsed.network for r in ranks], dict(feeds), constants)
    _check_replicas(outputs)
    if position is None:
        return RunResult(outputs[0], len(ranks))
    logits = outputs[0].get(LOGITS_OUTPUT)
    if logits is None:
        raise TrtcasError(f"the network has no {LOGITS_OUTPUT!r} output")
    vocab = _real_vocab(ranks[0].loaded.parsed, logits.shape[-1])
    return RunResult(outputs[0], len(ranks), logits[0, position, :vocab].astype(np.float32))


def _check_replicas(outputs: Sequence[Mapping[str, np.ndarray]]) -> None:
    """Outputs every rank holds whole (all-gathered logits) must be the same on every rank;
    a difference means the ranks' collectives or weights disagree, not a rounding."""
    for rank, theirs in enumerate(outputs[1:], start=1):
        for name, value in outputs[0].items():
            other = theirs.get(name)
            if other is not None and other.shape == value.shape and not np.array_equal(other, value, equal_nan=True):
                raise TrtcasError(f"rank {rank}'s output {name!r} differs from rank 0's; the ranks' networks disagree")


def _real_vocab(parsed: Any, width: int | None) -> int | None:
    """The model's vocabulary (padding for vocab-parallel sharding excluded); ``width``
    (the logits' last dim) when the network does not say."""
    geometry = getattr(parsed, "geometry", None)
    if geometry is None:
        return width
    return geometry.vocab if width is None else min(width, geometry.vocab)


def read_input_files(specs: Sequence[str]) -> dict[str, np.ndarray]:
    """``NAME=FILE.npy`` pairs -> arrays."""
    feeds = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise TrtcasError(f"--input {spec!r}: expected NAME=FILE.npy")
        try:
            feeds[name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise TrtcasError(f"--input {name}: cannot read {path} as a .npy array ({exc})") from None
    return feeds
