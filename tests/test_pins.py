"""trtcas.cas.pins: one pin file per target, whatever the target's name."""

from __future__ import annotations

import json
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from trtcas.cas.digest import hash_bytes
from trtcas.cas.pins import Pins, pin_file_name

SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*\.json$")
names = st.one_of(
    st.text(max_size=300),
    st.from_regex(r"[a-z]+-[0-9](\.[0-9]){1,2}-[0-9]+b", fullmatch=True),  # llama-3.1-8b and friends
    st.lists(st.sampled_from(["..", ".", "a", "b.c", "", "模型", "x" * 200]), max_size=6).map("/".join),
)


def test_dotted_model_names_get_files_of_their_own(tmp_path):
    assert pin_file_name("llama-3.1-8b") != pin_file_name("llama-3.2-1b")
    pins = Pins(tmp_path / "pins")
    blob = hash_bytes(b"x")
    pins.pin("llama-3.1-8b", ["k1"], [blob])
    pins.pin("llama-3.2-1b", ["k2"], [blob])
    assert {(p.target, tuple(p.action_keys)) for p in pins.all()} == {("llama-3.1-8b", ("k1",)), ("llama-3.2-1b", ("k2",))}


@settings(max_examples=500, deadline=None)
@given(st.lists(names, unique=True, max_size=30))
def test_distinct_targets_never_share_a_file(targets):
    files = [pin_file_name(t) for t in targets]
    assert len(set(files)) == len(files)
    assert len({f.lower() for f in files}) == len(files)  # also on case-insensitive file systems


@settings(max_examples=500, deadline=None)
@given(names)
def test_every_target_gets_a_safe_file_name(target):
    name = pin_file_name(target)
    assert SAFE_NAME.match(name), name
    assert len(name.encode()) <= 120 and name not in (".", "..") and pin_file_name(target) == name


@settings(max_examples=50, deadline=None)
@given(names)
def test_pin_round_trips_the_exact_target(tmp_path_factory, target):
    root = tmp_path_factory.mktemp("cache")
    pins = Pins(root / "pins")
    pins.pin(target, ["k"], [])
    (only,) = pins.all()
    assert only.target == target
    assert [p.parent for p in (root / "pins").iterdir()] == [root / "pins"]


def test_old_style_pin_files_are_still_read_and_replaced_on_the_next_pin(tmp_path):
    old_dir = tmp_path / "pins"
    old_dir.mkdir()
    # the old naming: with_suffix folded both of these into llama-3.json; the file holds 3.2
    (old_dir / "llama-3.json").write_text(json.dumps({"target": "llama-3.2-1b", "action_keys": ["old"], "blobs": []}))
    (old_dir / "model.json").write_text(json.dumps({"target": "model.toml", "action_keys": ["m"], "blobs": []}))
    pins = Pins(tmp_path / "pins")
    assert {p.target for p in pins.all()} == {"llama-3.2-1b", "model.toml"}
    pins.pin("model.toml", ["m2"], [])
    pins.pin("llama-3.1-8b", ["new"], [])  # its old name is llama-3.json too, but that file is 3.2's
    assert not (old_dir / "model.json").exists() and (old_dir / "llama-3.json").exists()
    assert {(p.target, tuple(p.action_keys)) for p in pins.all()} == {
        ("llama-3.2-1b", ("old",)), ("model.toml", ("m2",)), ("llama-3.1-8b", ("new",))}
