"""Build-farm cases on a real local Ray cluster and a real nginx cache, in a network namespace.

Not collected on its own (the name does not start with ``test_``): ``test_ray_farm.py`` runs
this module under ``unshare -n`` with only loopback up, so Ray binds 127.0.0.1 and no traffic
leaves the machine. One cluster serves the module: a head that runs nothing and three
workers, ``a`` and ``c`` offering sm86 and ``b`` offering sm120 (``trtcas worker start --sm``
resources). The case that kills a node runs last.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import make_models
from support.nginx_server import run_nginx
from support.ray_fleet import fake_fleet, in_network_namespace
from support.targets import LLM_MATRIX_TARGET

pytestmark = pytest.mark.skipif(not in_network_namespace(), reason="runs only inside test_ray_farm.py's network namespace")

MATRIX_TARGET = """
[target]
name = "{name}"
[model]
onnx = "model.onnx"
[engine]
backend = "tensorrt_rtx"
matrix = [{entries}]
"""
ENGINES = ("sm86.engine", "sm120.engine")


def matrix_project(root: Path, name: str, sms: tuple[str, ...]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "model.onnx").write_bytes(make_models.make_conv_block(0).SerializeToString())
    entries = ", ".join(f'{{ targets = ["{sm}"] }}' for sm in sms)
    (root / "trtcas.toml").write_text(MATRIX_TARGET.format(name=name, entries=entries))
    return root


def trtcas(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trtcas.cli", *args], capture_output=True, text=True, timeout=240)


def build_json(project: Path, cache: Path, *args: str) -> dict:
    done = trtcas("build", str(project), "--json", "--cache-dir", str(cache), *args)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(done.stdout)


def engines(project: Path) -> dict[str, bytes]:
    return {name: (project / "out" / "engines" / name).read_bytes() for name in ENGINES}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("farm")


@pytest.fixture(scope="module")
def fleet(root):
    with fake_fleet(root, {"a": ("sm86",), "b": ("sm120",), "c": ("sm86",)}) as farm:
        yield farm


@pytest.fixture(scope="module")
def nginx(root):
    with run_nginx(root / "nginx") as server:
        yield server


@pytest.fixture(scope="module")
def project(root) -> tuple[Path, dict[str, bytes]]:
    """The matrix target and its engines as a local build (threads) makes them."""
    path = matrix_project(root / "project", "matrix", ("sm86", "sm120"))
    result = build_json(path, root / "local-cache")
    assert result["counts"] == {"built": 3}
    return path, engines(path)


def test_matrix_engines_run_on_nodes_with_their_sm(fleet, nginx, project, root):
    path, local = project
    result = build_json(path, root / "driver-cache", "--scheduler", "ray", "--ray-address", fleet.address,
                        "--remote", nginx.url, "--profile", str(root / "trace.json"))
    by_id = {a["id"]: a for a in result["actions"]}
    assert set(by_id) == {"network[rank0]", "engine[sm86]", "engine[sm120]"}
    assert all(a["status"] == "built" for a in by_id.values())
    for sm in ("sm86", "sm120"):
        ran_on = fleet.label_of(by_id[f"engine[{sm}]"]["node_id"])
        assert fleet.sms[ran_on] == (sm,), f"engine[{sm}] ran on {ran_on}, which offers {fleet.sms[ran_on]}"
    assert fleet.label_of(by_id["network[rank0]"]["node_id"]) in fleet.sms  # a worker, not the head
    for record in by_id.values():
        assert record["host"] and 0 <= record["queue_seconds"] < 120
        assert len(record["node_id"]) == 56  # Ray's full hex node id
    assert engines(path) == local  # equal in bytes to a local build's
    assert list((nginx.data_dir / "ac").iterdir())  # results were shared through the remote
    trace = json.loads((root / "trace.json").read_text())["traceEvents"]
    tracks = {e["pid"]: e["args"]["name"] for e in trace if e["name"] == "process_name"}
    pid_of = {e["name"]: e["pid"] for e in trace if e.get("ph") == "X"}
    for action_id, record in by_id.items():  # one track per node, named by host and node id
        assert tracks[pid_of[action_id]].endswith(record["node_id"])


def test_fully_cached_rebuild_never_contacts_the_farm(project, root):
    path, local = project
    # An address nothing listens on: a cached build must not even try to connect.
    result = build_json(path, root / "driver-cache", "--scheduler", "ray", "--ray-address", "127.0.0.1:9")
    assert result["counts"] == {"cached": 3}
    assert engines(path) == local


def test_second_machine_gets_every_hit_through_the_remote(fleet, nginx, project, root):
    path, local = project
    result = build_json(path, root / "second-machine", "--scheduler", "ray", "--ray-address", fleet.address,
                        "--remote", nginx.url)
    assert result["counts"] == {"remote": 3}
    assert engines(path) == local


def test_without_a_remote_outputs_come_back_through_ray(fleet, project, root):
    path, local = project
    result = build_json(path, root / "no-remote", "--scheduler", "ray", "--ray-address", fleet.address)
    assert result["counts"] == {"built": 3}
    assert engines(path) == local


def test_llm_ranks_move_their_tensors_through_the_remote(fleet, nginx, root):
    """convert -> network -> engine per rank on different nodes: the network reads the
    convert's per-tensor blobs (named by a manifest) from the remote cache."""
    from make_tiny_llama import make_tiny_llama

    path = root / "llm"
    make_tiny_llama(path / "hf", seed=0)
    (path / "trtcas.toml").write_text(LLM_MATRIX_TARGET)
    plans = [f"rank{r}-{sm}.engine" for r in (0, 1) for sm in ("sm86", "sm120")]
    local = build_json(path, root / "llm-local")
    assert local["counts"] == {"built": 8}
    expected = {p: (path / "out/engines" / p).read_bytes() for p in plans}
    checkpoint = (path / "out/checkpoint/rank1.safetensors").read_bytes()
    farm = build_json(path, root / "llm-driver", "--scheduler", "ray", "--ray-address", fleet.address, "--remote", nginx.url)
    assert farm["counts"] == {"built": 8}
    by_id = {a["id"]: a for a in farm["actions"]}
    assert fleet.sms[fleet.label_of(by_id["engine[rank1,sm120]"]["node_id"])] == ("sm120",)
    assert {p: (path / "out/engines" / p).read_bytes() for p in plans} == expected
    assert (path / "out/checkpoint/rank1.safetensors").read_bytes() == checkpoint


def test_no_node_offers_an_sm_fails_before_anything_runs(fleet, nginx, root):
    path = matrix_project(root / "sm89", "sm89", ("sm86", "sm89"))
    done = trtcas("build", str(path), "--cache-dir", str(root / "sm89-cache"), "--scheduler", "ray",
                  "--ray-address", fleet.address, "--remote", nginx.url)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("trtcas: error:")]
    assert len(errors) == 1 and "trtcas/sm89" in errors[0] and "engine[sm89]" in errors[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not (path / "out").exists()


def test_worker_start_joins_offering_its_sms(fleet, root):
    """A real `trtcas worker start --block` joins; the sm89 engine then builds on it."""
    path = root / "sm89"  # the target of the previous case, which no node could build
    worker = subprocess.Popen(
        [sys.executable, "-m", "trtcas.cli", "worker", "start", "--address", fleet.address, "--sm", "sm89",
         "--num-cpus", "1", "--block", "--cache-dir", str(root / "cache-started")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not any("trtcas/sm89" in n["Resources"] for n in fleet.live_nodes()):
            assert worker.poll() is None, worker.stdout.read().decode(errors="replace")
            assert time.monotonic() < deadline, "the worker never joined"
            time.sleep(0.5)
        joined = next(n for n in fleet.live_nodes() if "trtcas/sm89" in n["Resources"])
        assert {"trtcas/worker", "trtcas/tensorrt_rtx=1.7.1.116"} <= set(joined["Resources"])
        assert not any(k.startswith("trtcas/sm") and k != "trtcas/sm89" for k in joined["Resources"])
        result = build_json(path, root / "sm89-cache", "--scheduler", "ray", "--ray-address", fleet.address)
        assert {a["id"]: a["node_id"] for a in result["actions"]}["engine[sm89]"] == joined["NodeID"]
    finally:
        os.killpg(worker.pid, signal.SIGTERM)  # ray start --block stops its node on SIGTERM
        worker.wait(timeout=60)


def test_a_node_killed_mid_action_is_retried_elsewhere(fleet, root):
    """Runs last: it kills one of the sm86 nodes while that node runs the action."""
    work = root / "kill"
    (work / "markers").mkdir(parents=True)
    (work / "src.txt").write_text("payload")
    (work / "trtcas.toml").write_text(f"""
[target]
name = "kill"
[[action]]
id = "slow"
rule = "test.slow_on"
params = {{ needs = ["trtcas/sm86"], sleep = 6, marker_dir = "{work / 'markers'}" }}
inputs = {{ src = "src.txt" }}
materialize = {{ out = "slow.txt" }}
""")
    # The test rule exists only where support.farm_rules registered it: a driver that does.
    driver = ("import sys; from support import farm_rules; farm_rules.register(); "
              "from trtcas.cli import main; main(sys.argv[1:])")
    build = subprocess.Popen(
        [sys.executable, "-c", driver, "build", str(work), "--json", "--cache-dir", str(work / "cache"),
         "--scheduler", "ray", "--ray-address", fleet.address],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list((work / "markers").iterdir()):
        assert build.poll() is None and time.monotonic() < deadline, "the action never started"
        time.sleep(0.05)
    first = list((work / "markers").iterdir())[0].name.split(".", 1)[1]
    fleet.kill(fleet.label_of(first))
    out, err = build.communicate(timeout=180)
    assert build.returncode == 0, out[-2000:] + err[-2000:]
    record = json.loads(out)["actions"][0]
    assert record["status"] == "built"
    assert record["node_id"] != first and fleet.sms[fleet.label_of(record["node_id"])] == ("sm86",)
    assert (work / "out" / "slow.txt").read_text() == "payloadpayload"
    assert len(list((work / "markers").iterdir())) == 2  # started twice: once on each node
    for label in fleet.sms:  # nothing half-written in any worker's cache, the dead one's included
        if fleet.cache_dir(label).exists():
            verify = trtcas("cache", "verify", "--cache-dir", str(fleet.cache_dir(label)))
            assert verify.returncode == 0, verify.stdout + verify.stderr
