"""gc never removes what a running build uses (issue 13 item 4), nor what a kept manifest names.

The rule (cas/gc.py): keep everything used since the older of ``now - gc-min-age`` and the
start of the oldest running build (its lease), every blob a running build noted as re-used,
and anything used between planning and deleting.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import numpy as np
import onnx

import trtcas
from trtcas.cas.actioncache import ActionResult
from trtcas.cas.content_store import ContentStore
from trtcas.cas.digest import hash_bytes, hash_file
from trtcas.cas.gc import execute_gc, plan_gc, verify_store
from trtcas.cas.manifest import TensorEntry, TensorManifest

import make_models
from support.targets import CONV_TARGET

HOUR = 3600


def _age(path, seconds):
    when = time.time() - seconds
    os.utime(path, (when, when))


def _entry(store, name, outputs, age):
    key = hash_bytes(name.encode())
    store.actions.put(key, ActionResult(outputs=outputs))
    _age(store.actions.entry_path(key), age)
    for digest in outputs.values():
        _age(store.blobs.locate(digest).path, age)
    return key


def test_min_age_keeps_recent_entries_and_blobs(store):
    old = _entry(store, "old", {"out": store.blobs.put_bytes(b"o" * 1000)}, 2 * HOUR)
    new = _entry(store, "new", {"out": store.blobs.put_bytes(b"n" * 1000)}, 60)
    plan = plan_gc(store, 0)  # the default gc-min-age (15 minutes)
    assert plan.evict_actions == (old.hex,) and new.hex not in plan.evict_actions
    assert plan_gc(store, 0, min_age_s=0).evict_actions == (old.hex, new.hex)


def test_a_running_build_lease_keeps_what_it_used_since_it_started(store):
    from trtcas.cas.leases import hold_lease, live_leases

    with hold_lease(store) as lease:
        before = _entry(store, "before", {"out": store.blobs.put_bytes(b"b" * 1000)}, 2 * HOUR)
        during = _entry(store, "during", {"out": store.blobs.put_bytes(b"d" * 1000)}, time.time() - lease.started - 1)
        _age(store.actions.entry_path(during), 0)  # used after the lease began
        plan = plan_gc(store, 0, min_age_s=0)
        assert before.hex in plan.evict_actions and during.hex not in plan.evict_actions
    assert not live_leases(store.layout.leases_root)
    assert during.hex in plan_gc(store, 0, min_age_s=0).evict_actions


def test_a_blob_a_running_build_found_already_stored_is_kept(store):
    from trtcas.cas.leases import hold_lease

    data = np.random.default_rng(0).bytes(10_000)
    digest = store.blobs.put_bytes(data)
    _age(store.blobs.locate(digest).path, 2 * HOUR)  # an orphan, old: the first to go
    with hold_lease(store):
        assert store.blobs.put_bytes(data) == digest  # the build stores it again: nothing written
        plan = plan_gc(store, 0, min_age_s=0)
        assert digest not in plan.evict_blobs
        execute_gc(store, plan)
        assert store.blobs.has(digest)


def test_a_lease_of_a_dead_process_protects_nothing_and_is_removed(store, tmp_path):
    child = subprocess.run([sys.executable, "-c", (
        "import os, sys; from trtcas.cas.content_store import ContentStore; from trtcas.cas.leases import Lease;"
        f"s = ContentStore({str(tmp_path / 'cache')!r}); Lease(s.layout.leases_root); os._exit(0)")])
    assert child.returncode == 0 and list(store.layout.leases_root.glob("*.lease"))
    old = _entry(store, "old", {"out": store.blobs.put_bytes(b"o" * 100)}, 2 * HOUR)
    assert plan_gc(store, 0, min_age_s=0).evict_actions == (old.hex,)
    assert not list(store.layout.leases_root.glob("*.lease"))


def test_tensor_blobs_of_a_kept_manifest_are_kept(store):
    tensors = [np.random.default_rng(i).bytes(50_000) for i in range(3)]
    entries = [TensorEntry(f"t{i}", "F16", (25_000,), store.blobs.put_bytes(t)) for i, t in enumerate(tensors)]
    manifest = store.blobs.put_bytes(TensorManifest.of(entries).to_bytes())
    for entry in entries:
        _age(store.blobs.locate(entry.digest).path, 3 * HOUR)
    key = _entry(store, "convert", {"weights": manifest}, 2 * HOUR)
    orphan = store.blobs.put_bytes(b"z" * 60_000)
    _age(store.blobs.locate(orphan).path, 4 * HOUR)
    total = plan_gc(store, 1 << 40).size_before
    plan = plan_gc(store, total - 1, min_age_s=0)  # one blob must go: the orphan, not a tensor
    assert plan.evict_blobs == (orphan,) and plan.evict_actions == ()
    execute_gc(store, plan)
    assert all(store.blobs.has(e.digest) for e in entries) and store.actions.get(key)
    whole = plan_gc(store, 0, min_age_s=0)  # evicting the entry frees its tensors too
    assert set(whole.evict_blobs) == {manifest, *(e.digest for e in entries)}


def test_an_entry_used_between_plan_and_delete_is_kept(store):
    key = _entry(store, "hit-meanwhile", {"out": store.blobs.put_bytes(b"h" * 1000)}, 2 * HOUR)
    plan = plan_gc(store, 0, min_age_s=0)
    assert key.hex in plan.evict_actions
    assert store.actions.get(key) is not None  # a build hits it now: its mtime moves
    execute_gc(store, plan)
    assert store.actions.get(key) is not None


# ---- the reproduction: gc --max-size 0 in a loop while builds run -----------------


def _project(root, seed):
    root.mkdir()
    (root / "trtcas.toml").write_text(CONV_TARGET.format(backend="auto"))
    onnx.save(make_models.make_conv_block(seed=seed), str(root / "model.onnx"))
    return root


def test_gc_in_a_loop_never_fails_a_build(tmp_path):
    cache = tmp_path / "cache"
    subprocess.run([sys.executable, "-m", "trtcas.cli", "cache", "config", "gc-min-age", "0", "--cache-dir", str(cache)],
                   check=True, capture_output=True)
    projects = [_project(tmp_path / f"p{i}", seed=i % 3) for i in range(6)]
    stop = threading.Event()
    runs = []

    def gc_loop():
        while not stop.is_set():
            runs.append(subprocess.run([sys.executable, "-m", "trtcas.cli", "cache", "gc", "--max-size", "0",
                                        "--cache-dir", str(cache)], capture_output=True, text=True))

    looper = threading.Thread(target=gc_loop)
    looper.start()
    try:
        results = [trtcas.build(p / "trtcas.toml", cache_dir=cache) for p in projects for _ in range(2)]
    finally:
        stop.set()
        looper.join()
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    assert len(runs) >= 2 and all(r.returncode == 0 for r in runs), [r.stderr for r in runs if r.returncode]
    for project in projects:
        built = (project / "out" / "engines" / "rank0.engine")
        recorded = __import__("json").loads((project / "out" / "build.json").read_text())["outputs"]
        assert str(hash_file(built)) == recorded["engines/rank0.engine"]
    assert verify_store(ContentStore(cache)).ok
