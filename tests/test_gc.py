import os
import time

import numpy as np
import pytest

from trtcas.cas.actioncache import ActionResult
from trtcas.cas.digest import hash_bytes
from trtcas.cas.gc import execute_gc, parse_size, plan_gc, verify_store
from trtcas.errors import TrtcasError

MB = 1 << 20


def add_action(store, name, size, when):
    data = np.random.default_rng(abs(hash(name)) % 2**32).bytes(size)
    digest = store.blobs.put_bytes(data)
    key = hash_bytes(name.encode())
    store.actions.put(key, ActionResult(outputs={"out": digest}))
    os.utime(store.actions._path(key), (when, when))
    os.utime(store.blobs.locate(digest).path, (when, when))
    return key, digest


def test_parse_size():
    assert parse_size("50G") == 50 << 30
    assert parse_size("1.5GiB") == int(1.5 * (1 << 30))
    assert parse_size("200m") == 200 << 20
    assert parse_size("1024") == 1024
    with pytest.raises(TrtcasError, match="bad size"):
        parse_size("ten gigs")


def test_gc_keeps_pinned_and_recent_evicts_oldest(store):
    now = time.time()
    old_pinned = add_action(store, "pinned", MB, now - 5000)
    oldest = add_action(store, "oldest", MB, now - 4000)
    older = add_action(store, "older", MB, now - 3000)
    recent = add_action(store, "recent", MB, now - 10)
    store.pins.pin("model.toml", [old_pinned[0].hex], [old_pinned[1]])
    # a hit refreshes recency: "older" becomes the most recent
    assert store.actions.get(older[0]) is not None
    plan = plan_gc(store, int(2.5 * MB), min_age_s=0)  # LRU order alone: no minimum age
    assert plan.evict_actions == (oldest[0].hex, recent[0].hex)[:len(plan.evict_actions)]
    assert oldest[0].hex in plan.evict_actions and old_pinned[0].hex not in plan.evict_actions
    execute_gc(store, plan)
    assert store.actions.get(old_pinned[0]) and store.actions.get(older[0])
    assert store.actions.get(oldest[0]) is None
    assert not store.blobs.has(oldest[1])
    assert plan.size_after <= 2.5 * MB


def test_gc_under_cap_removes_nothing(store):
    add_action(store, "a", MB, time.time())
    plan = plan_gc(store, 10 * MB)
    assert plan.evict_actions == () and plan.evict_blobs == ()


def test_shared_blob_survives_until_last_referrer_goes(store):
    now = time.time()
    shared = store.blobs.put_bytes(np.random.default_rng(1).bytes(MB))
    for i, when in enumerate((now - 100, now - 50)):
        key = hash_bytes(b"k%d" % i)
        store.actions.put(key, ActionResult(outputs={"out": shared}))
        os.utime(store.actions._path(key), (when, when))
    plan = plan_gc(store, MB + 250, min_age_s=0)  # evicting one ~180-byte entry is enough
    assert len(plan.evict_actions) == 1 and plan.evict_blobs == ()


def test_verify_reports_then_repairs(store):
    key, digest = add_action(store, "a", 1000, time.time())
    path = store.blobs.locate(digest).path
    os.chmod(path, 0o644)
    path.write_bytes(b"x" * 1000)
    report = verify_store(store)
    assert not report.ok and report.bad_blobs[0][0] == str(digest) and report.dangling_actions == (key.hex,)
    assert verify_store(store, repair=True).repaired
    assert verify_store(store).ok
    assert store.actions.get(key) is None
