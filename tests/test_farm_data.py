"""How a build-farm worker reads and shares blobs (graph/schedulers/farm_data.py), with a real
nginx as the shared cache and two cache directories as the driver's and a worker's."""

import json

import pytest

from trtcas.cas.blobstore import BlobNotFound, DigestMismatch
from trtcas.cas.digest import hash_bytes
from trtcas.cas.manifest import TensorEntry, TensorManifest
from trtcas.cas.remote import open_remote
from trtcas.graph.schedulers.farm_data import (
    DriverStaging,
    WorkerStore,
    blob_closure,
    place_sources,
    remote_fetcher,
    shipped_fetcher,
)


def manifest_of(store, tensors):
    entries = [TensorEntry(name, "F32", (len(data) // 4,), store.blobs.put_bytes(data)) for name, data in tensors.items()]
    return store.blobs.put_bytes(TensorManifest.of(entries).to_bytes())


def test_closure_adds_the_tensors_a_manifest_names_and_skips_what_is_absent(machine_a):
    tensors = {"w": b"\x01" * 64, "b": b"\x02" * 16}
    manifest = manifest_of(machine_a, tensors)
    plain = machine_a.blobs.put_bytes(b'{"not": "a manifest"}')
    absent = hash_bytes(b"never stored", machine_a.algo)
    closure = blob_closure(machine_a.blobs, [manifest, plain, absent])
    assert set(closure) == {manifest, plain} | {hash_bytes(d, machine_a.algo) for d in tensors.values()}


def test_a_worker_reads_inputs_through_the_remote_the_driver_staged(machine_a, machine_b, nginx, tmp_path):
    remote = open_remote(nginx.url, machine_a.algo)
    manifest = manifest_of(machine_a, {"w": b"\x03" * 32})
    source = tmp_path / "ckpt"
    (source / "sub").mkdir(parents=True)
    (source / "config.json").write_text("{}")
    (source / "sub" / "rank0.bin").write_bytes(b"weights")
    from trtcas.cas.tree import source_digest

    src_digest = source_digest(source, machine_a.statcache, machine_a.algo)
    staging = DriverStaging(machine_a, remote, put_object=lambda data: pytest.fail("nothing should go by object store"))
    shipment = staging.stage({"weights": manifest, "ckpt": src_digest}, {"ckpt": str(source)})
    assert shipment.shipped == {}  # all of it went to the remote
    worker = WorkerStore(machine_b, [remote_fetcher(open_remote(nginx.url, machine_b.algo), machine_b.blobs)])
    tensors = TensorManifest.from_bytes(worker.blobs.get_bytes(manifest))
    assert worker.blobs.get_bytes(tensors["w"].digest) == b"\x03" * 32  # named by the manifest, fetched too
    # The worker does not see the driver's path: the directory is rebuilt under its scratch.
    moved = source.rename(tmp_path / "elsewhere")
    placed = place_sources(worker, shipment.sources, tmp_path / "scratch")
    assert placed["ckpt"] != source and (placed["ckpt"] / "sub" / "rank0.bin").read_bytes() == b"weights"
    assert source_digest(placed["ckpt"], machine_b.statcache, machine_b.algo) == src_digest
    moved.rename(source)  # and where it sees the same content at the same path, that path is used
    assert place_sources(worker, shipment.sources, tmp_path / "scratch2")["ckpt"] == source


def test_an_onnx_and_its_external_data_are_placed_together_or_not_at_all(machine_a, machine_b, nginx, tmp_path):
    """A worker that sees the model file at the driver's path but not its external data
    (a partly shared filesystem) must not use one in place and rebuild the other elsewhere:
    the model would not find its weights beside it."""
    from trtcas.cas.tree import source_digest

    remote = open_remote(nginx.url, machine_a.algo)
    model, data = tmp_path / "m" / "model.onnx", tmp_path / "m" / "model.data"
    model.parent.mkdir()
    model.write_bytes(b"onnx bytes")
    data.write_bytes(b"weights")
    inputs = {n: source_digest(p, machine_a.statcache, machine_a.algo) for n, p in (("onnx", model), ("data", data))}
    shipment = DriverStaging(machine_a, remote, put_object=lambda d: pytest.fail("no object store")).stage(
        inputs, {"onnx": str(model), "data": str(data)})
    worker = WorkerStore(machine_b, [remote_fetcher(remote, machine_b.blobs)])
    assert place_sources(worker, shipment.sources, tmp_path / "s1") == {"onnx": model, "data": data}
    data.unlink()  # this worker no longer sees the data file where the driver had it
    placed = place_sources(worker, shipment.sources, tmp_path / "s2")
    assert placed["onnx"].parent == placed["data"].parent != model.parent
    assert placed["onnx"].read_bytes() == b"onnx bytes" and placed["data"].read_bytes() == b"weights"


def test_without_a_remote_blobs_go_by_object_store_and_outputs_come_back_verified(machine_a, machine_b):
    """A dict stands in for Ray's object store here (ray.put / ray.get); the real one carries
    these blobs in test_ray_farm.py."""
    objects = {}

    def put_object(data):
        objects[len(objects)] = data
        return len(objects) - 1

    digest = machine_a.blobs.put_bytes(b"upstream output")
    shipment = DriverStaging(machine_a, None, put_object).stage({"x": digest}, {})
    worker = WorkerStore(machine_b, [shipped_fetcher(shipment.shipped, machine_b.blobs, objects.__getitem__)])
    assert worker.blobs.get_bytes(digest) == b"upstream output"
    produced = worker.blobs.put_bytes(b"an engine")
    assert list(worker.blobs.produced) == [produced]
    staging = DriverStaging(machine_a, None, put_object)
    with pytest.raises(DigestMismatch, match="discarded"):  # wrong bytes are never stored
        staging.receive([produced], {str(produced): b"tampered"})
    assert not machine_a.blobs.has(produced)
    staging.receive([produced], {str(produced): b"an engine"})
    assert machine_a.blobs.get_bytes(produced) == b"an engine"
    with pytest.raises(BlobNotFound, match="neither"):
        worker.blobs.ensure(hash_bytes(b"nobody has this", machine_b.algo))
    json.dumps([str(d) for d in worker.blobs.produced])  # what a reply carries is plain text
