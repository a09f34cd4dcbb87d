import pytest

from trtcas.cas.actioncache import ActionResult
from trtcas.cas.digest import hash_bytes


def test_round_trip_and_hit_counting(store):
    out = store.blobs.put_bytes(b"engine plan")
    log = store.blobs.put_bytes(b"build log")
    key = hash_bytes(b"action key")
    result = ActionResult(outputs={"plan": out}, duration_s=1.5, fingerprint={"trt": "1.7"}, log=log, metadata={"x": 1})
    assert store.actions.get(key) is None
    store.actions.put(key, result)
    assert store.actions.get(key) == result
    assert store.counters.read() == {"ac_miss": 1, "ac_hit": 1}


def test_entry_whose_blob_is_gone_is_a_miss(store):
    out = store.blobs.put_bytes(b"engine plan")
    key = hash_bytes(b"k")
    store.actions.put(key, ActionResult(outputs={"plan": out}))
    store.blobs.delete(out)
    assert store.actions.get(key) is None


def test_refuses_to_cache_unstored_outputs(store):
    with pytest.raises(ValueError):
        store.actions.put(hash_bytes(b"k"), ActionResult(outputs={"plan": hash_bytes(b"never stored")}))


def test_corrupt_entry_is_removed_and_a_miss(store):
    out = store.blobs.put_bytes(b"p")
    key = hash_bytes(b"k")
    store.actions.put(key, ActionResult(outputs={"plan": out}))
    path = store.actions._path(key)
    path.write_bytes(b"\xc1garbage")
    assert store.actions.get(key) is None
    assert not path.exists()
