"""Fixtures and helpers for the remote-cache tests: a real nginx, a fault proxy, two machines.

conftest.py imports the fixtures from here, so every test module can use them by name. A missing nginx fails (CI installs it), it does not
skip: a remote-cache suite that quietly tests nothing is worse than a red one.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from trtcas.cas.actioncache import ActionResult
from trtcas.cas.content_store import ContentStore
from trtcas.cas.digest import Digest, hash_bytes

from support.fault_proxy import FaultProxy
from support.nginx_server import NginxMissing, NginxServer, nginx_binary, run_nginx

TEST_TOKEN = "tok-Zq81vX0secret"
TEST_USER, TEST_PASSWORD = "alice", "pw-9Lk2secret"


def _require_nginx() -> None:
    try:
        nginx_binary()
    except NginxMissing as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def nginx(tmp_path) -> NginxServer:
    """An nginx Bazel-protocol cache, no auth."""
    _require_nginx()
    with run_nginx(tmp_path / "nginx") as server:
        yield server


@pytest.fixture
def nginx_token(tmp_path) -> NginxServer:
    """An nginx cache that answers 401 unless ``Authorization: Bearer TEST_TOKEN``."""
    _require_nginx()
    with run_nginx(tmp_path / "nginx-token", token=TEST_TOKEN) as server:
        yield server


@pytest.fixture
def nginx_basic(tmp_path) -> NginxServer:
    """An nginx cache that answers 401 unless basic auth is TEST_USER:TEST_PASSWORD."""
    import base64

    _require_nginx()
    basic = base64.b64encode(f"{TEST_USER}:{TEST_PASSWORD}".encode()).decode()
    with run_nginx(tmp_path / "nginx-basic", basic=basic) as server:
        yield server


@pytest.fixture
def nginx_tls(tmp_path) -> NginxServer:
    """An https nginx cache with a self-signed certificate (``server.cert``)."""
    _require_nginx()
    with run_nginx(tmp_path / "nginx-tls", tls=True) as server:
        yield server


@pytest.fixture
def proxy(nginx) -> FaultProxy:
    """A fault proxy in front of ``nginx``, passing everything through until told otherwise."""
    with FaultProxy(nginx.port, delay_s=1.0, socket_timeout_s=10.0) as fault_proxy:
        yield fault_proxy


@pytest.fixture
def machine_a(tmp_path) -> ContentStore:
    return ContentStore(tmp_path / "machine_a")


@pytest.fixture
def machine_b(tmp_path) -> ContentStore:
    return ContentStore(tmp_path / "machine_b")


def action_key(name: str, algo: str = "blake3") -> Digest:
    return hash_bytes(f"action:{name}".encode(), algo)


def store_action(store: ContentStore, name: str, sizes=(1000, 200_000)) -> tuple[Digest, ActionResult, dict[str, bytes]]:
    """Run a pretend action on ``store``: random output blobs and a local action entry."""
    contents = {f"out{i}": os.urandom(size) for i, size in enumerate(sizes)}
    outputs = {name_: store.blobs.put_bytes(data) for name_, data in contents.items()}
    result = ActionResult(outputs=outputs, duration_s=1.5, host="machine-a")
    key = action_key(name, store.algo)
    store.actions.put(key, result)
    return key, result, contents


def write_random_file(path: Path, size: int, chunk: int = 1 << 20) -> Path:
    """A file of random bytes written in chunks (the test never holds it in memory)."""
    with open(path, "wb") as out:
        left = size
        while left:
            n = min(chunk, left)
            out.write(os.urandom(n))
            left -= n
    return path
