"""The HTTP remote cache against a real nginx: protocol, two machines, and every fault."""

from __future__ import annotations

import io
import logging
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import pytest

from trtcas.cas.actioncache import ActionResult
from trtcas.cas.digest import hash_bytes, hash_file
from trtcas.cas.remote import RemoteRejected, RemoteUnavailable, open_remote, redact_url
from trtcas.cas.remote.http import HttpRemote
from trtcas.cas.tiered import TieredStore
from trtcas.errors import TrtcasError

from support.remote_fixtures import TEST_PASSWORD, TEST_TOKEN, TEST_USER, action_key, store_action, write_random_file

FAST = dict(timeout=5.0, retries=1, backoff_s=0.02, env={})


def _read_all(body) -> bytes:
    return b"".join(iter(lambda: body.read(1 << 20), b""))


def _no_temp_files(store) -> bool:
    return not list(store.blobs.iter_temp_files())


# ---- the protocol itself --------------------------------------------------------------


def test_blob_and_action_round_trip(nginx):
    remote = HttpRemote(nginx.url, **FAST)
    data = b"engine plan bytes" * 1000
    digest = hash_bytes(data)
    assert not remote.head_blob(digest)
    assert remote.get_blob(digest, _read_all) is None  # 404 is a miss, not an error
    remote.put_blob(digest, lambda: io.BytesIO(data))
    assert remote.head_blob(digest)
    assert remote.get_blob(digest, _read_all) == data
    assert (nginx.data_dir / "cas" / digest.hex).read_bytes() == data  # Bazel's layout

    key = action_key("round-trip")
    entry = ActionResult(outputs={"engine": digest}).to_bytes()
    assert remote.get_action(key) is None and not remote.head_action(key)
    remote.put_action(key, entry)
    assert remote.get_action(key) == entry and remote.head_action(key)
    assert (nginx.data_dir / "ac" / key.hex).read_bytes() == entry


def test_connections_are_kept_alive(proxy):
    remote = HttpRemote(proxy.url, **FAST)
    data = b"x" * 5000
    digest = hash_bytes(data)
    remote.put_blob(digest, lambda: io.BytesIO(data))
    for _ in range(10):
        assert remote.head_blob(digest)
        assert remote.get_blob(digest, _read_all) == data
    assert len(proxy.requests) == 21
    assert proxy.connections_accepted == 1


def test_malformed_urls_are_one_line_user_errors():
    for url in ("ftp://host/cache", "http://", "http://host:99999/", "host:8080", "http://h/x?y=1"):
        with pytest.raises(TrtcasError) as info:
            HttpRemote(url)
        assert "\n" not in str(info.value)
    with pytest.raises(TrtcasError) as info:
        HttpRemote("ftp://bob:hunter2@host/")
    assert "hunter2" not in str(info.value)
    assert redact_url("https://bob:hunter2@host:1/p") == "https://***@host:1/p"
    remote = HttpRemote("https://bob:hunter2@cache.example/team/", env={})
    assert "hunter2" not in repr(remote) and remote.url == "https://cache.example:443/team"


def test_open_remote_picks_the_backend_by_scheme():
    assert isinstance(open_remote("http://127.0.0.1:9/team", "blake3", env={}), HttpRemote)
    for url in ("ftp://bob:hunter2@host/", "host:8080", "s3x://bucket"):
        with pytest.raises(TrtcasError) as info:
            open_remote(url, "blake3")
        assert "unknown scheme" in str(info.value) and "hunter2" not in str(info.value)


# ---- two machines sharing through the remote --------------------------------------------


def test_machine_b_gets_machine_a_results_verified(nginx, machine_a, machine_b):
    key, result, contents = store_action(machine_a, "engine-build", sizes=(1000, 300_000, 0))
    a = TieredStore(machine_a, HttpRemote(nginx.url, **FAST))
    assert a.upload_action(key, result)

    b = TieredStore(machine_b, HttpRemote(nginx.url, **FAST))
    assert machine_b.actions.get(key) is None
    found, source = b.get_action(key)
    assert source == "remote" and found == result
    for name, data in contents.items():
        assert machine_b.blobs.get_bytes(result.outputs[name]) == data  # byte-identical, local now
    assert b.get_action(key).source == "local"
    assert b.warnings == [] and a.warnings == []
    assert b.get_action(action_key("never-built")) == (None, "miss")


def test_reupload_skips_blobs_the_remote_has(proxy, machine_a):
    key, result, _ = store_action(machine_a, "twice", sizes=(10, 20, 30))
    tiered = TieredStore(machine_a, HttpRemote(proxy.url, **FAST))
    assert tiered.upload_action(key, result)
    first = [(r.method, r.path.split("/")[1]) for r in proxy.requests]
    assert first.count(("PUT", "cas")) == 3 and first[-1] == ("PUT", "ac")  # action entry last
    proxy.requests.clear()
    assert tiered.upload_action(key, result)
    second = [(r.method, r.path.split("/")[1]) for r in proxy.requests]
    assert second == [("HEAD", "cas")] * 3 + [("PUT", "ac")]


def test_upload_false_is_read_only(nginx, machine_a, machine_b):
    key, result, _ = store_action(machine_a, "ro")
    reader = TieredStore(machine_a, HttpRemote(nginx.url, **FAST), upload=False)
    assert not reader.upload_action(key, result)
    assert not reader.put_action(key, result)
    assert not (nginx.data_dir / "ac").exists() and not (nginx.data_dir / "cas").exists()
    assert TieredStore(machine_b, HttpRemote(nginx.url, **FAST)).get_action(key).source == "miss"


def test_64mb_blob_round_trip_in_bounded_memory(nginx, machine_a, machine_b, tmp_path):
    size = 64 << 20
    digest = machine_a.blobs.put_file(write_random_file(tmp_path / "engine.plan", size))
    result = ActionResult(outputs={"engine": digest})
    key = action_key("big")
    machine_a.actions.put(key, result)
    a = TieredStore(machine_a, HttpRemote(nginx.url, **FAST))
    b = TieredStore(machine_b, HttpRemote(nginx.url, **FAST))

    tracemalloc.start()
    try:
        assert a.upload_action(key, result)
        upload_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        assert b.get_action(key).source == "remote"
        download_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # Chunks of at most a few MiB are alive at once (the store samples the first 4 MiB to
    # decide on compression); a buffered blob would show up as >= 64 MiB here.
    assert upload_peak < size // 4, upload_peak
    assert download_peak < size // 4, download_peak
    assert hash_file(machine_b.blobs.locate(digest).path) == digest


# ---- faults: never an exception, never bad bytes ----------------------------------------


def test_killed_server_gives_warnings_misses_and_trips_the_breaker(nginx, machine_a, machine_b):
    key, result, _ = store_action(machine_a, "before-kill")
    remote = HttpRemote(nginx.url, timeout=2.0, retries=2, backoff_s=0.02, failure_threshold=3, env={})
    b = TieredStore(machine_b, remote)
    assert b.get_action(key).source == "miss"  # server up, a kept-alive connection exists
    nginx.stop()

    for i in range(3):
        assert b.get_action(action_key(f"k{i}")) == (None, "miss")
    assert remote.disabled
    assert len(b.warnings) == 4
    assert all("connection refused" in w for w in b.warnings[:3])
    assert "disabled for the rest of this process" in b.warnings[3]

    started = time.monotonic()
    for i in range(20):
        assert b.get_action(action_key(f"later{i}")).source == "miss"
    assert not b.upload_action(key, result)
    assert time.monotonic() - started < 0.5  # no more connection attempts, no backoff
    assert len(b.warnings) == 4  # the breaker warned once
    assert _no_temp_files(machine_b)


def test_5xx_is_a_miss_with_a_warning(proxy, machine_a, machine_b):
    key, result, _ = store_action(machine_a, "five-hundred")
    assert TieredStore(machine_a, HttpRemote(proxy.url, **FAST)).upload_action(key, result)
    proxy.set_mode("error500")
    b = TieredStore(machine_b, HttpRemote(proxy.url, **FAST))
    assert b.get_action(key) == (None, "miss")
    assert len(b.warnings) == 1 and "HTTP 500" in b.warnings[0]
    assert machine_b.actions.read(key) is None
    assert sum(1 for r in proxy.requests if r.fault == "error500") == 2  # retried once, then gave up
    uploader = TieredStore(machine_b, HttpRemote(proxy.url, **FAST))
    key2, result2, _ = store_action(machine_b, "upload-into-500")
    assert not uploader.upload_action(key2, result2)
    assert "HTTP 500" in uploader.warnings[0]


def test_slow_server_times_out_into_a_miss(proxy, machine_a, machine_b):
    key, result, _ = store_action(machine_a, "slow")
    assert TieredStore(machine_a, HttpRemote(proxy.url, **FAST)).upload_action(key, result)
    proxy.set_mode("delay")  # 1 s per request
    b = TieredStore(machine_b, HttpRemote(proxy.url, timeout=0.3, retries=0, env={}))
    started = time.monotonic()
    assert b.get_action(key) == (None, "miss")
    assert time.monotonic() - started < 0.9
    assert "timed out" in b.warnings[0]


def test_corrupt_bytes_are_detected_not_stored_and_not_trusted_again(proxy, machine_a, machine_b):
    key, result, contents = store_action(machine_a, "corrupt", sizes=(5000, 6 << 20))
    assert TieredStore(machine_a, HttpRemote(proxy.url, **FAST)).upload_action(key, result)
    remote = HttpRemote(proxy.url, **FAST)
    b = TieredStore(machine_b, remote)

    proxy.set_mode("corrupt", path_contains="/cas/")
    assert b.get_action(key) == (None, "miss")
    assert len(b.warnings) == 1 and "wrong bytes" in b.warnings[0]
    bad = [d for d in result.outputs.values() if not remote.trusts(d)]
    assert len(bad) == 1  # the first blob fetched; the lookup stopped there
    assert not machine_b.blobs.has(bad[0]) and machine_b.actions.read(key) is None
    assert _no_temp_files(machine_b)

    proxy.set_mode("pass")
    proxy.requests.clear()
    assert b.get_action(key) == (None, "miss")  # the remote is not asked for that blob again
    assert not any(r.path.endswith(bad[0].hex) for r in proxy.requests)
    assert not machine_b.blobs.has(bad[0])
    # A fresh process (a new client) trusts the remote again and gets the right bytes.
    assert TieredStore(machine_b, HttpRemote(proxy.url, **FAST)).get_action(key).source == "remote"
    for name, data in contents.items():
        assert machine_b.blobs.get_bytes(result.outputs[name]) == data


def test_a_body_cut_short_is_a_network_fault_not_a_lie(proxy, machine_a, machine_b):
    key, result, _ = store_action(machine_a, "truncated", sizes=(3 << 20,))
    assert TieredStore(machine_a, HttpRemote(proxy.url, **FAST)).upload_action(key, result)
    remote = HttpRemote(proxy.url, **FAST)
    b = TieredStore(machine_b, remote)
    proxy.set_mode("truncate", path_contains="/cas/")
    assert b.get_action(key) == (None, "miss")
    assert "unread" in b.warnings[0]
    assert all(remote.trusts(d) for d in result.outputs.values())
    assert _no_temp_files(machine_b)
    proxy.set_mode("pass")
    assert b.get_action(key).source == "remote"


def test_a_garbage_action_entry_is_a_miss(nginx, machine_b):
    remote = HttpRemote(nginx.url, **FAST)
    key = action_key("garbage")
    remote.put_action(key, b"<html>not msgpack</html>")
    b = TieredStore(machine_b, remote)
    assert b.get_action(key) == (None, "miss")
    assert "not a trtcas ActionResult" in b.warnings[0]


def test_an_entry_naming_a_blob_the_remote_lacks_is_a_quiet_miss(nginx, machine_b):
    remote = HttpRemote(nginx.url, **FAST)
    key = action_key("dangling")
    remote.put_action(key, ActionResult(outputs={"engine": hash_bytes(b"never uploaded")}).to_bytes())
    b = TieredStore(machine_b, remote)
    assert b.get_action(key) == (None, "miss") and b.warnings == []


# ---- credentials ------------------------------------------------------------------------


def test_bearer_token_from_env(nginx_token, machine_a, machine_b, monkeypatch):
    monkeypatch.setenv("TRTCAS_REMOTE_TOKEN", TEST_TOKEN)
    key, result, _ = store_action(machine_a, "authed")
    assert TieredStore(machine_a, HttpRemote(nginx_token.url, timeout=5)).upload_action(key, result)
    remote = HttpRemote(nginx_token.url, timeout=5)
    assert TEST_TOKEN not in repr(remote)
    assert TieredStore(machine_b, remote).get_action(key).source == "remote"


@pytest.mark.parametrize("token", ["tok-wrong-Zq81vX0secret", None])
def test_wrong_or_missing_token_is_a_401_warning_that_never_shows_the_token(
    nginx_token, machine_a, token, monkeypatch, caplog
):
    caplog.set_level(logging.DEBUG)
    if token:
        monkeypatch.setenv("TRTCAS_REMOTE_TOKEN", token)
    else:
        monkeypatch.delenv("TRTCAS_REMOTE_TOKEN", raising=False)
    key, result, _ = store_action(machine_a, "unauthorized")
    remote = HttpRemote(nginx_token.url, timeout=5)
    tiered = TieredStore(machine_a, remote)
    assert tiered.get_action(action_key("elsewhere")) == (None, "miss")
    assert not tiered.upload_action(key, result)
    with pytest.raises(RemoteRejected) as info:
        remote.head_blob(next(iter(result.outputs.values())))
    assert info.value.status == 401
    assert len(tiered.warnings) == 2 and all("HTTP 401" in w for w in tiered.warnings)
    # The same credentials would be refused again: no more requests, no more warnings.
    assert tiered.get_action(action_key("elsewhere2")).source == "miss"
    assert not tiered.upload_action(key, result)
    assert len(tiered.warnings) == 2
    texts = [*tiered.warnings, caplog.text, str(info.value), repr(remote)]
    for secret in filter(None, (token, TEST_TOKEN)):
        assert not any(secret in text for text in texts)
    assert not remote.disabled  # a refusal is an answer: the server is up


def test_basic_auth_from_the_url_and_from_env(nginx_basic, machine_a, machine_b, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    key, result, _ = store_action(machine_a, "basic")
    host = nginx_basic.url.split("://", 1)[1]
    with_url = HttpRemote(f"http://{TEST_USER}:{TEST_PASSWORD}@{host}", timeout=5, env={})
    assert TEST_PASSWORD not in repr(with_url) and TEST_PASSWORD not in with_url.url
    assert TieredStore(machine_a, with_url).upload_action(key, result)
    monkeypatch.setenv("TRTCAS_REMOTE_USER", TEST_USER)
    monkeypatch.setenv("TRTCAS_REMOTE_PASSWORD", TEST_PASSWORD)
    monkeypatch.delenv("TRTCAS_REMOTE_TOKEN", raising=False)
    assert TieredStore(machine_b, HttpRemote(nginx_basic.url, timeout=5)).get_action(key).source == "remote"
    wrong = TieredStore(machine_b, HttpRemote(f"http://{TEST_USER}:nope@{host}", timeout=5, env={}))
    assert wrong.get_action(action_key("x")).source == "miss" and "HTTP 401" in wrong.warnings[0]
    assert TEST_PASSWORD not in caplog.text


def test_https_verifies_the_server_certificate(nginx_tls, machine_a, machine_b):
    key, result, _ = store_action(machine_a, "tls")
    untrusting = TieredStore(machine_a, HttpRemote(nginx_tls.url, **FAST))
    assert not untrusting.upload_action(key, result)
    assert "certificate" in untrusting.warnings[0]
    trusting = HttpRemote(nginx_tls.url, cafile=str(nginx_tls.cert), **FAST)
    assert TieredStore(machine_a, trusting).upload_action(key, result)
    assert TieredStore(machine_b, trusting).get_action(key).source == "remote"


def test_threads_each_keep_one_connection(proxy, machine_a, machine_b):
    actions = [store_action(machine_a, f"parallel{i}", sizes=(2000, 50_000)) for i in range(8)]
    uploader = TieredStore(machine_a, HttpRemote(proxy.url, **FAST))
    assert all(uploader.upload_action(key, result) for key, result, _ in actions)
    proxy.connections_accepted = 0
    remote = HttpRemote(proxy.url, **FAST)
    b = TieredStore(machine_b, remote)
    with ThreadPoolExecutor(max_workers=4) as pool:
        sources = list(pool.map(lambda action: b.get_action(action[0]).source, actions))
    assert sources == ["remote"] * 8 and b.warnings == []
    assert 1 <= proxy.connections_accepted <= 4


def test_unavailable_errors_say_what_and_where(tmp_path):
    remote = HttpRemote("http://user:hunter2@127.0.0.1:9/", timeout=1, retries=0, env={})
    with pytest.raises(RemoteUnavailable) as info:
        remote.get_action(action_key("x"))
    message = str(info.value)
    assert "127.0.0.1:9" in message and "connection refused" in message and "hunter2" not in message
