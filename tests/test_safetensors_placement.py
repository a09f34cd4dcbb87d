"""Placing a tensor manifest from the store as a ``.safetensors`` file
(``SafetensorsOutput.place``): tensors decoded ahead on threads, written by the file writer's
threads around the page cache. Whatever the tensors (every dtype, empty ones, sizes that
are no multiple of a disk block, several decoded at once), the file is byte for byte the one
the streaming writer lays out for the same manifest, reads back as the same arrays, and is
read-only with nothing left beside it."""

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import load_file

from trtcas.cas.content_store import ContentStore
from trtcas.rules.formats.safetensors import DTYPE_OF_CODE, TensorSlot, dtype_code, write_arrays
from trtcas.rules.formats.tensors import SAFETENSORS_OUTPUT, store_tensors

CODES = sorted(c for c in DTYPE_OF_CODE if c not in ("F8_E4M3",))  # safetensors' numpy reader lacks fp8


def _array(code: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, int(np.prod(shape)) * DTYPE_OF_CODE[code].itemsize, dtype=np.uint8)
    array = raw.view(DTYPE_OF_CODE[code]).reshape(shape)
    if code == "BOOL":
        array = (raw % 2).astype(np.bool_).reshape(shape)
    if code in ("F16", "BF16", "F32", "F64"):  # no NaN payloads: compare values, not bit patterns of NaNs
        array = (rng.standard_normal(shape) * 0.02).astype(DTYPE_OF_CODE[code])
    return array


tensor_sets = st.lists(
    st.tuples(st.sampled_from(CODES), st.lists(st.integers(0, 300), min_size=1, max_size=2).map(tuple)),
    min_size=1, max_size=6,
)


@settings(max_examples=15, deadline=None)
@given(tensor_sets, st.integers(0, 2**16))
def test_a_manifest_placed_from_the_store_is_the_streamed_layout_byte_for_byte(specs, seed):
    with tempfile.TemporaryDirectory() as tmp:
        store = ContentStore(Path(tmp) / "cache")
        tensors = [(f"t{i:02d}.{code.lower()}", _array(code, shape, seed + i)) for i, (code, shape) in enumerate(specs)]
        tensors.append(("big.bf16", _array("BF16", (3, 1 << 20), seed)))  # several blocks, decoded on threads
        with store.blobs.batch():
            manifest = store_tensors(store.blobs, iter(tensors))
        digest = store.blobs.put_bytes(manifest.to_bytes())

        placed = Path(tmp) / "out" / "weights.safetensors"
        SAFETENSORS_OUTPUT.place(store.blobs, digest, placed)

        reference = Path(tmp) / "reference.safetensors"
        by_name = dict(tensors)
        slots = [TensorSlot(e.name, dtype_code(by_name[e.name].dtype), e.shape) for e in manifest.entries]
        write_arrays(reference, slots, ((e.name, by_name[e.name]) for e in manifest.entries))
        assert placed.read_bytes() == reference.read_bytes()
        loaded = load_file(str(placed))
        assert set(loaded) == set(by_name)
        for name, array in by_name.items():
            assert loaded[name].tobytes() == np.ascontiguousarray(array).tobytes()
        assert placed.stat().st_mode & 0o222 == 0
        assert [p.name for p in placed.parent.iterdir()] == [placed.name]
