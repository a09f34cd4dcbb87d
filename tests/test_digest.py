import hashlib
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from safetensors.numpy import save_file

from trtcas.cas.digest import PARALLEL_HASH_THRESHOLD, BadDigest, Digest, hash_bytes, hash_file
from trtcas.rules.formats.safetensors import BadSafetensors
from trtcas.rules.formats.safetensors import hash_tensors as hash_safetensors


def test_text_form_round_trips():
    d = hash_bytes(b"abc")
    assert str(d).startswith("blake3:") and str(d).endswith("/3")
    assert Digest.parse(str(d)) == d


@pytest.mark.parametrize("text", ["", "blake3:zz/1", "md5:" + "0" * 32 + "/1", "blake3:" + "0" * 63 + "/1", "blake3:" + "0" * 64])
def test_bad_digest_text_is_rejected(text):
    with pytest.raises(BadDigest):
        Digest.parse(text)


def test_sha256_matches_hashlib(tmp_path):
    data = b"x" * 1000
    assert hash_bytes(data, "sha256").hex == hashlib.sha256(data).hexdigest()
    path = tmp_path / "f"
    path.write_bytes(data)
    assert hash_file(path, "sha256") == hash_bytes(data, "sha256")


@given(st.binary(max_size=4096))
def test_file_and_bytes_hash_agree(data):
    import os
    import tempfile
    with tempfile.NamedTemporaryFile(delete=False) as f:
        f.write(data)
    try:
        assert hash_file(f.name) == hash_bytes(data)
    finally:
        os.unlink(f.name)


def test_parallel_mmap_path_equals_streaming(tmp_path):
    data = np.random.default_rng(0).bytes(PARALLEL_HASH_THRESHOLD + 12345)
    path = tmp_path / "big"
    path.write_bytes(data)
    import blake3
    assert hash_file(path).hex == blake3.blake3(data).hexdigest()


def _weights(seed=0):
    rng = np.random.default_rng(seed)
    return {"a.weight": rng.standard_normal((8, 4)).astype(np.float16), "b.bias": rng.standard_normal(3).astype(np.float32),
            "empty": np.zeros((0, 2), np.float32)}


def test_safetensors_manifest_per_tensor(tmp_path):
    tensors = _weights()
    save_file(tensors, tmp_path / "w.safetensors")
    manifest = hash_safetensors(tmp_path / "w.safetensors")
    assert manifest.names == ("a.weight", "b.bias", "empty")
    for name, array in tensors.items():
        entry = manifest[name]
        assert entry.digest == hash_bytes(array.tobytes())
        assert entry.shape == array.shape
    assert manifest["a.weight"].dtype == "F16"
    assert type(manifest).from_bytes(manifest.to_bytes()) == manifest


def test_safetensors_one_changed_tensor_changes_one_entry(tmp_path):
    tensors = _weights()
    save_file(tensors, tmp_path / "a.safetensors")
    tensors["b.bias"] = tensors["b.bias"] + 1
    save_file(tensors, tmp_path / "b.safetensors")
    a, b = hash_safetensors(tmp_path / "a.safetensors"), hash_safetensors(tmp_path / "b.safetensors")
    changed = [x.name for x, y in zip(a.entries, b.entries) if x != y]
    assert changed == ["b.bias"]
    assert a.digest() != b.digest()


def test_truncated_safetensors_is_named(tmp_path):
    save_file(_weights(), tmp_path / "w.safetensors")
    data = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-10])
    with pytest.raises(BadSafetensors, match="cut.safetensors.*truncated"):
        hash_safetensors(tmp_path / "cut.safetensors")
    (tmp_path / "tiny.safetensors").write_bytes(b"\x01")
    with pytest.raises(BadSafetensors, match="tiny.safetensors"):
        hash_safetensors(tmp_path / "tiny.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(struct.pack("<Q", 5) + b"{notj")
    with pytest.raises(BadSafetensors, match="junk.safetensors"):
        hash_safetensors(tmp_path / "junk.safetensors")
