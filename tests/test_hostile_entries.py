"""Action entries and blobs that lie: issue 13 items 1, 9 and 10, each reproduced first.

1. An action entry (remote or local) that does not name the action's declared outputs, or
   names unsafe ones, is a miss with one warning and is never written locally.
9. ``cache get`` with a wrong size is "not in the cache"; nothing is quarantined.
10. A blob that is a symlink or not a regular file is refused and quarantined; a download
    is bounded by our own digest's size, never by what the remote claims.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys

import onnx
import pytest

import trtcas
from trtcas.cas.actioncache import ActionResult
from trtcas.cas.blobstore import BlobNotFound, DigestMismatch
from trtcas.cas.content_store import ContentStore
from trtcas.cas.digest import Digest, hash_bytes
from trtcas.cas.gc import verify_store
from trtcas.cas.remote.http import HttpRemote
from trtcas.cas.tiered import TieredStore
from trtcas.graph.rule import RULES

import make_models
from support.remote_fixtures import action_key, store_action
from support.targets import CONV_TARGET

FAST = dict(timeout=5.0, retries=0, backoff_s=0.02, env={})


def conv_project(tmp_path, name="a"):
    root = tmp_path / name
    root.mkdir()
    (root / "trtcas.toml").write_text(CONV_TARGET.format(backend="auto"))
    onnx.save(make_models.make_conv_block(seed=0), str(root / "model.onnx"))
    return root


def keys_by_id(result):
    return {r.id: Digest.parse(r.key) for r in result.actions}


# ---- item 1: entries checked against the action's declared outputs ------------------------


def test_builtin_rules_declare_their_outputs():
    for name in ("trt.network", "trt.engine", "trt.refit", "trt.plan_shaping_weights", "llm.convert",
                 "llm.import_checkpoint"):
        assert RULES.get(name).outputs, name


def test_entry_problem_names_what_is_wrong():
    from trtcas.cas.actioncache import entry_problem

    digest = hash_bytes(b"x")
    assert entry_problem(ActionResult(outputs={"plan": digest, "names": digest}), ("names", "plan")) is None
    assert "lacks names, plan" in entry_problem(ActionResult(outputs={}), ("names", "plan"))
    assert "has unknown extra" in entry_problem(ActionResult(outputs={"plan": digest, "names": digest, "extra": digest}),
                                                ("names", "plan"))
    for bad in ("../../x", "a/b", ".hidden", "..", "", "x\n"):
        assert "not plain names" in entry_problem(ActionResult(outputs={bad: digest}))


def test_remote_entry_naming_none_of_the_outputs_is_a_miss_and_never_poisons_the_local_cache(tmp_path, nginx):
    a, b = conv_project(tmp_path, "a"), conv_project(tmp_path, "b")
    first = trtcas.build(a / "trtcas.toml", cache_dir=a / "cache", remote=nginx.url)
    assert first.ok and not first.warnings
    network_key = keys_by_id(first)["network[rank0]"]
    # the remote's entry for the network now names no outputs (as in the issue) ...
    (nginx.data_dir / "ac" / network_key.hex).write_bytes(ActionResult(outputs={}).to_bytes())
    second = trtcas.build(b / "trtcas.toml", cache_dir=b / "cache", remote=nginx.url)
    assert second.ok, second.error
    statuses = {r.id: r.status for r in second.actions}
    assert statuses["network[rank0]"] == "built" and statuses["engine[rank0]"] in ("remote", "cached")
    assert len([w for w in second.warnings if "does not fit the action" in w]) == 1
    # ... and the local cache holds the real entry, so builds without the remote work too
    local = ContentStore(b / "cache").actions.read(network_key)
    assert set(local.outputs) == set(RULES.get("trt.network").outputs)
    third = trtcas.build(b / "trtcas.toml", cache_dir=b / "cache")
    assert third.ok and {r.status for r in third.actions} == {"cached"}
    assert verify_store(ContentStore(b / "cache")).ok


def test_remote_entry_with_unsafe_output_names_is_a_miss_and_not_stored(nginx, machine_a, machine_b):
    digest = machine_a.blobs.put_bytes(b"payload")
    key = action_key("unsafe")
    (nginx.data_dir / "ac").mkdir(parents=True, exist_ok=True)
    (nginx.data_dir / "ac" / key.hex).write_bytes(ActionResult(outputs={"../../x": digest}).to_bytes())
    tier = TieredStore(machine_b, HttpRemote(nginx.url, **FAST))
    assert tier.get_action(key).source == "miss"
    assert len(tier.warnings) == 1 and "not plain names" in tier.warnings[0]
    assert machine_b.actions.read(key) is None and not machine_b.blobs.has(digest)


def test_local_entry_missing_declared_outputs_is_a_miss_with_one_warning(tmp_path, caplog):
    a = conv_project(tmp_path)
    first = trtcas.build(a / "trtcas.toml", cache_dir=a / "cache")
    store = ContentStore(a / "cache")
    network_key = keys_by_id(first)["network[rank0]"]
    entry = store.actions.read(network_key)
    broken = ActionResult(outputs={k: v for k, v in entry.outputs.items() if k != "io"})
    store.actions.put(network_key, broken)  # the names are safe; the declared "io" is missing
    again = trtcas.build(a / "trtcas.toml", cache_dir=a / "cache")
    assert again.ok, again.error
    assert {r.id: r.status for r in again.actions}["network[rank0]"] == "built"
    assert len([r for r in caplog.records if "not valid for its action" in r.getMessage()]) == 1
    assert "io" in store.actions.read(network_key).outputs


def test_unsafe_names_are_never_written_locally(store):
    digest = store.blobs.put_bytes(b"x")
    with pytest.raises(ValueError, match="not plain names"):
        store.actions.put(action_key("bad"), ActionResult(outputs={"../x": digest}))
    assert store.actions.read(action_key("bad")) is None


# ---- item 9: a wrong size is a miss, nothing quarantined ---------------------------------


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "trtcas.cli", *args], capture_output=True, text=True)


@pytest.mark.parametrize("compressible", [False, True])
def test_cache_get_with_wrong_size_is_not_in_cache_and_quarantines_nothing(tmp_path, compressible):
    cache = tmp_path / "cache"
    src = tmp_path / "blob"
    src.write_bytes(b"a" * 50_000 if compressible else os.urandom(50_000))
    digest = Digest.parse(_cli("cache", "put", str(src), "--cache-dir", str(cache)).stdout)
    wrong = Digest(digest.algo, digest.hex, digest.size + 1)
    miss = _cli("cache", "get", str(wrong), "-o", str(tmp_path / "out"), "--cache-dir", str(cache))
    assert miss.returncode == 1 and "not in the cache" in miss.stderr and "Traceback" not in miss.stderr
    assert not (cache / "quarantine").exists() or not any((cache / "quarantine").iterdir())
    ok = _cli("cache", "get", str(digest), "-o", str(tmp_path / "out"), "--cache-dir", str(cache))
    assert ok.returncode == 0 and (tmp_path / "out").read_bytes() == src.read_bytes()


# ---- item 10: symlinks and other non-files are refused; downloads bounded by our digest ---


def _stored_path(store, digest):
    return store.blobs.locate(digest).path


def test_blob_replaced_by_symlink_is_refused_quarantined_and_rebuilt(tmp_path):
    a = conv_project(tmp_path)
    first = trtcas.build(a / "trtcas.toml", cache_dir=a / "cache")
    store = ContentStore(a / "cache")
    plan = Digest.parse(next(r for r in first.actions if r.id == "engine[rank0]").outputs["plan"])
    path = _stored_path(store, plan)
    decoy = tmp_path / "decoy"
    decoy.write_bytes(path.read_bytes())  # same bytes: hashing alone would accept it
    path.unlink()
    path.symlink_to(decoy)
    report = verify_store(store)
    assert not report.ok and "not a regular file" in report.bad_blobs[0][1]
    with pytest.raises(BlobNotFound):
        store.blobs.materialize(plan, tmp_path / "engine")
    assert not path.is_symlink() and any((a / "cache" / "quarantine").iterdir())
    again = trtcas.build(a / "trtcas.toml", cache_dir=a / "cache")
    assert again.ok and {r.id: r.status for r in again.actions}["engine[rank0]"] == "built"
    engine = a / "out" / "engines" / "rank0.engine"
    assert not engine.is_symlink() and hash_bytes(engine.read_bytes()) == plan


def test_blob_path_that_is_a_directory_is_refused(store):
    digest = store.blobs.put_bytes(b"content")
    path = _stored_path(store, digest)
    path.unlink()
    path.mkdir()
    assert not store.blobs.has(digest)
    assert not path.exists()  # moved to quarantine
    assert store.blobs.put_bytes(b"content") == digest and store.blobs.get_bytes(digest) == b"content"


class _Endless(io.RawIOBase):
    """A body that never ends, counting what was read from it."""

    def __init__(self):
        self.read_bytes = 0

    def readable(self):
        return True

    def read(self, amount=-1):
        amount = 1 << 20 if amount is None or amount < 0 else amount
        self.read_bytes += amount
        return b"\0" * amount


def test_download_is_bounded_by_our_digest_size_not_the_remote(store):
    digest = hash_bytes(b"\0" * 1000)
    body = _Endless()
    with pytest.raises(DigestMismatch):
        store.blobs.put_verified_stream(body, Digest(digest.algo, digest.hex, 1000))
    assert body.read_bytes <= 1001 and not store.blobs.has(digest)
    assert not list(store.blobs.iter_temp_files())


def test_remote_blob_over_max_blob_size_is_not_downloaded(nginx, proxy, machine_a, machine_b):
    key, result, _ = store_action(machine_a, "big", sizes=(300_000,))
    assert TieredStore(machine_a, HttpRemote(nginx.url, **FAST)).upload_action(key, result)
    machine_b.save_settings(machine_b.settings.__class__(remote_max_blob_size=100_000))
    tier = TieredStore(machine_b, HttpRemote(proxy.url, **FAST))
    assert tier.get_action(key).source == "miss"
    assert "remote-max-blob-size" in tier.warnings[0]
    assert not [r for r in proxy.requests if r.path.startswith("/cas/") and r.method == "GET"]


def test_remote_blob_larger_than_free_space_is_not_downloaded(tmp_path, nginx, machine_a):
    from support.tmpfs import tmpfs

    key, result, _ = store_action(machine_a, "fills", sizes=(2 << 20,))
    assert TieredStore(machine_a, HttpRemote(nginx.url, **FAST)).upload_action(key, result)
    with tmpfs(tmp_path / "small", size="4m") as small:
        local = ContentStore(small / "cache")
        tier = TieredStore(local, HttpRemote(nginx.url, **FAST))
        assert tier.get_action(key).source == "miss"
        assert "does not fit" in tier.warnings[0] and "free" in tier.warnings[0]
        assert not list(local.blobs.iter_blobs())


def test_verify_flags_a_local_entry_with_unsafe_names(store):
    from trtcas.cas.atomic import atomic_write_bytes

    digest = store.blobs.put_bytes(b"x")
    key = action_key("planted")
    atomic_write_bytes(store.actions.entry_path(key), ActionResult(outputs={"../../x": digest}).to_bytes())
    report = verify_store(store)
    assert report.dangling_actions == (key.hex,)
    assert verify_store(store, repair=True).repaired and store.actions.read(key) is None
