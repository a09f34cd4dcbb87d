"""One action on a build-farm worker: the body of the Ray task the ``ray`` scheduler sends.

The worker opens its own local cache (``$TRTCAS_CACHE_DIR`` of the worker, else
``~/.cache/trtcas``), reads inputs by digest through it (the shared remote first, then what
the driver shipped; see ``farm_data``), runs the rule exactly as a local build would
(``graph.context.run_invocation``), and shares what it produced: uploaded to the remote, or
returned through Ray's object store when there is none. It records no action-cache entry:
keys, hits and records are the driver's business.

Before running, the worker checks that it *is* the environment the action's key claims (the
fingerprint fields in the key, e.g. the exact TensorRT-RTX version): routing should have
guaranteed it, and an engine stored under a key that names another toolchain would be a
silently wrong cache entry.
"""

from __future__ import annotations

import dataclasses
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from trtcas.cas.actioncache import ActionResult
from trtcas.cas.content_store import ContentStore
from trtcas.cas.digest import Digest
from trtcas.errors import TrtcasError
from trtcas.graph.context import run_invocation
from trtcas.graph.fingerprint import collect_fingerprint
from trtcas.graph.rule import Rule
from trtcas.graph.runner import Invocation
from trtcas.graph.schedulers.farm_data import (
    Shipment,
    WorkerStore,
    place_sources,
    remote_fetcher,
    shipped_fetcher,
)
from trtcas.registry import Registry


@dataclass(frozen=True)
class Reply:
    """What a worker sends back: the result (with where and when it ran in its metadata),
    every blob it produced, and the bytes of those it could not upload."""

    result: ActionResult
    produced: tuple[Digest, ...]
    returned: Mapping[str, bytes]


def environment_mismatch(claimed: Mapping[str, Any], here: Mapping[str, Any]) -> list[str]:
    """Fingerprint fields where this host differs from what the key claims."""
    return [f"{name} is {here.get(name)!r} here, the key says {value!r}"
            for name, value in sorted(claimed.items()) if here.get(name) != value]


def run_on_worker(invocation: Invocation, rule: Rule, shipment: Shipment, remote_url: str | None,
                  upload: bool, algo: str, submitted_at: float) -> Reply:
    """The Ray task: run ``invocation`` here; see the module docstring."""
    import ray

    started = time.time()
    node_id = ray.get_runtime_context().get_node_id()
    claimed = invocation.key.components.get("env", {})
    wrong = environment_mismatch(claimed, collect_fingerprint().select(tuple(claimed)))
    if wrong:
        raise TrtcasError(f"worker {socket.gethostname()} ({node_id[:12]}) cannot build {invocation.action.id}: "
                          f"{'; '.join(wrong)}; start it with the toolchain the build names")
    local = ContentStore(None, algo=algo)
    remote = None
    if remote_url:
        from trtcas.cas.remote import open_remote

        remote = open_remote(remote_url, algo)
    fetchers = ([remote_fetcher(remote, local.blobs)] if remote else []) + [
        shipped_fetcher(shipment.shipped, local.blobs, ray.get)]
    store = WorkerStore(local, fetchers)
    local.layout.tmp_root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="sources-", dir=local.layout.tmp_root))
    try:
        sources = place_sources(store, shipment.sources, scratch)
        for name, digest in invocation.inputs.items():
            if name not in sources:
                store.blobs.ensure(digest)
        result = run_invocation(invocation.action, invocation.key, invocation.inputs, sources, store,  # type: ignore[arg-type]
                                Registry("rule", builtin={rule.name: rule}))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    produced = tuple(dict.fromkeys([*store.blobs.produced, *result.referenced()]))
    returned = {} if (remote and upload and _upload(remote, local, produced)) else {
        str(d): local.blobs.get_bytes(d) for d in produced}
    metadata = {**result.metadata, "node_id": node_id, "queue_seconds": round(max(0.0, started - submitted_at), 6)}
    return Reply(dataclasses.replace(result, metadata=metadata, host=socket.gethostname()), produced, returned)


def _upload(remote: Any, local: ContentStore, produced: tuple[Digest, ...]) -> bool:
    """Every produced blob into the remote (what it has is skipped); False on any fault, and
    then the bytes go back through Ray instead."""
    try:
        for digest in produced:
            if not remote.head_blob(digest):
                remote.put_blob(digest, lambda d=digest: local.blobs.open(d))
    except Exception:
        return False
    return not remote.disabled
