"""Every remote operation has an overall deadline (issue 13 item 2).

The issue's reproduction: a remote dripping 1 byte per 1.5 s kept every socket read under
the 30 s timeout, so a 0.5 s build took 91 s, and the circuit breaker counted the drip as a
success. Here a real nginx sits behind the fault proxy in ``drip`` mode.
"""

from __future__ import annotations

import time

import onnx
import pytest

import trtcas
from trtcas.cas.remote import RemoteUnavailable
from trtcas.cas.remote.http import HttpRemote
from trtcas.cas.tiered import TieredStore

import make_models
from support.fault_proxy import FaultProxy
from support.remote_fixtures import store_action
from support.targets import CONV_TARGET


@pytest.fixture
def drip(nginx):
    with FaultProxy(nginx.port, drip_s=0.3, socket_timeout_s=30) as proxy:
        yield proxy


def test_a_dripping_download_is_cut_at_the_deadline_and_counts_as_a_failure(nginx, drip, machine_a, machine_b):
    key, result, _ = store_action(machine_a, "drip", sizes=(2000,))
    assert TieredStore(machine_a, HttpRemote(nginx.url, env={})).upload_action(key, result)
    drip.set_mode("drip")
    remote = HttpRemote(drip.url, timeout=5.0, deadline_s=1.0, retries=2, failure_threshold=1, env={})
    start = time.monotonic()
    with pytest.raises(RemoteUnavailable, match="deadline"):
        remote.get_action(key)
    assert time.monotonic() - start < 3.0  # not 5 s per read, not retried past the deadline
    assert remote.disabled and "deadline" in remote.disabled_reason
    tier = TieredStore(machine_b, HttpRemote(drip.url, timeout=5.0, deadline_s=1.0, env={}))
    assert tier.get_action(key).source == "miss" and not list(machine_b.blobs.iter_temp_files())


def test_a_dripping_blob_leaves_nothing_behind(nginx, drip, machine_a, machine_b):
    key, result, _ = store_action(machine_a, "drip-blob", sizes=(5000,))
    assert TieredStore(machine_a, HttpRemote(nginx.url, env={})).upload_action(key, result)
    drip.set_mode("drip", path_contains="/cas/")
    tier = TieredStore(machine_b, HttpRemote(drip.url, timeout=5.0, deadline_s=1.0, env={}))
    start = time.monotonic()
    assert tier.get_action(key).source == "miss"
    assert time.monotonic() - start < 3.0
    assert "deadline" in tier.warnings[0]
    assert not list(machine_b.blobs.iter_blobs()) and not list(machine_b.blobs.iter_temp_files())
    assert machine_b.actions.read(key) is None


def test_a_build_against_a_dripping_remote_takes_seconds_not_minutes(tmp_path, nginx, drip):
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "trtcas.toml").write_text(CONV_TARGET.format(backend="auto"))
    onnx.save(make_models.make_conv_block(seed=0), str(seed / "model.onnx"))
    assert trtcas.build(seed / "trtcas.toml", cache_dir=seed / "cache", remote=nginx.url).ok
    drip.set_mode("drip")
    from trtcas.cas.content_store import ContentStore
    from trtcas.cas.settings import CacheSettings

    ContentStore(tmp_path / "cache").save_settings(CacheSettings(remote_deadline_s=1.0))
    start = time.monotonic()
    result = trtcas.build(seed / "trtcas.toml", cache_dir=tmp_path / "cache", remote=drip.url)
    elapsed = time.monotonic() - start
    assert result.ok and elapsed < 15, (elapsed, result.warnings)
    assert len([w for w in result.warnings if "deadline" in w]) == len(result.actions)  # each lookup cut off
