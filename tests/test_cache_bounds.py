"""A cache that stays in bounds (issue 14, "cache bounds"): a size cap persisted in the cache
and enforced after each build, pins listed, dropped, and expired by age."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import onnx
import pytest

import trtcas
from trtcas.cas.content_store import ContentStore
from trtcas.cas.settings import CacheSettings, load_settings, parse_duration, with_setting
from trtcas.errors import TrtcasError

import make_models
from support.targets import CONV_TARGET


def cli(*args, cache):
    return subprocess.run([sys.executable, "-m", "trtcas.cli", *map(str, args), "--cache-dir", str(cache)],
                          capture_output=True, text=True)


def project(root, seed=0, name="conv"):
    root.mkdir(parents=True, exist_ok=True)
    (root / "trtcas.toml").write_text(CONV_TARGET.format(backend="auto").replace('name = "conv"', f'name = "{name}"'))
    onnx.save(make_models.make_conv_block(seed=seed), str(root / "model.onnx"))
    return root


def test_cache_config_persists_and_rejects_bad_values(tmp_path):
    cache = tmp_path / "cache"
    assert "max-size = none" in cli("cache", "config", cache=cache).stdout
    assert cli("cache", "config", "max-size", "50G", cache=cache).stdout.strip() == "max-size = 50.0 GiB"
    assert load_settings(cache / "config.json").max_size == 50 << 30
    assert "50.0 GiB" in cli("cache", "config", "max-size", cache=cache).stdout
    bad = cli("cache", "config", "max-sise", "1G", cache=cache)
    assert bad.returncode == 1 and "did you mean 'max-size'" in bad.stderr and "Traceback" not in bad.stderr
    bad = cli("cache", "config", "pin-max-age", "soon", cache=cache)
    assert bad.returncode == 1 and bad.stderr.startswith("trtcas: error: bad duration")
    assert cli("cache", "config", "max-size", "none", cache=cache).returncode == 0
    assert ContentStore(cache).settings.max_size is None


def test_settings_parsing():
    assert parse_duration("30d") == 30 * 86400 and parse_duration("90") == 90.0
    assert with_setting(CacheSettings(), "pin-max-age", "12h").pin_max_age_s == 12 * 3600
    with pytest.raises(TrtcasError, match="cannot be turned off"):
        with_setting(CacheSettings(), "remote-deadline", "none")
    with pytest.raises(TrtcasError, match="must be positive"):
        with_setting(CacheSettings(), "remote-deadline", "0")


def test_a_broken_settings_file_is_an_error_naming_it(tmp_path):
    cache = tmp_path / "cache"
    ContentStore(cache)
    (cache / "config.json").write_text("{not json")
    result = cli("cache", "stats", cache=cache)
    assert result.returncode == 0  # stats do not need the settings
    bad = cli("cache", "config", cache=cache)
    assert bad.returncode == 1 and "config.json" in bad.stderr and "Traceback" not in bad.stderr


def test_builds_keep_the_cache_under_its_max_size(tmp_path):
    cache = tmp_path / "cache"
    cli("cache", "config", "gc-min-age", "0", cache=cache)
    sizes = []
    for seed in range(4):  # four targets, each pinned; the cap lets about two of them stay
        p = project(tmp_path / f"p{seed}", seed=seed, name=f"conv{seed}")
        if seed == 1:
            sizes.append(json.loads(cli("cache", "stats", "--json", cache=cache).stdout)["disk_bytes"])
            cap = int(sizes[0] * 2.5)
            assert cli("cache", "config", "max-size", cap, cache=cache).returncode == 0
            cli("cache", "unpin", "conv0", cache=cache)
        result = trtcas.build(p / "trtcas.toml", cache_dir=cache)
        assert result.ok, result.error
        if seed >= 1:
            cli("cache", "unpin", f"conv{seed - 1}", cache=cache)  # only the newest stays pinned
    stats = json.loads(cli("cache", "stats", "--json", cache=cache).stdout)
    assert stats["disk_bytes"] + stats["action_bytes"] <= cap
    assert trtcas.build(tmp_path / "p3" / "trtcas.toml", cache_dir=cache).actions[-1].status == "cached"


def test_pins_list_unpin_and_expire(tmp_path):
    cache = tmp_path / "cache"
    for name in ("llama-3.1-8b", "llama-3.2-1b"):
        assert trtcas.build(project(tmp_path / name, name=name) / "trtcas.toml", cache_dir=cache).ok
    rows = json.loads(cli("cache", "pins", "--json", cache=cache).stdout)
    assert sorted(r["target"] for r in rows) == ["llama-3.1-8b", "llama-3.2-1b"]
    assert len({r["id"] for r in rows}) == 2
    assert all(r["bytes"] > 0 and 0 <= r["age_s"] < 600 and r["actions"] == 2 for r in rows)
    text = cli("cache", "pins", cache=cache).stdout
    assert "llama-3.1-8b" in text and "old" in text

    assert cli("cache", "unpin", "llama-3.1-8b", cache=cache).returncode == 0
    assert [r["target"] for r in json.loads(cli("cache", "pins", "--json", cache=cache).stdout)] == ["llama-3.2-1b"]
    missing = cli("cache", "unpin", "llama-3.1-8b", cache=cache)
    assert missing.returncode == 1 and "cache pins" in missing.stderr

    store = ContentStore(cache)
    pin_file = next(store.layout.pins_root.glob("*.json"))
    wire = json.loads(pin_file.read_text())
    wire["pinned_at"] = time.time() - 40 * 86400
    pin_file.write_text(json.dumps(wire))
    cli("cache", "config", "pin-max-age", "30d", cache=cache)
    plan = json.loads(cli("cache", "gc", "--max-size", "1T", "--json", cache=cache).stdout)
    assert plan["bytes_freed"] == 0
    assert json.loads(cli("cache", "pins", "--json", cache=cache).stdout) == []  # the expired pin is gone
