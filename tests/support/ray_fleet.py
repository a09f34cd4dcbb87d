"""A fake build farm on one machine: a real local Ray cluster whose nodes advertise different SMs.

Each node gets the resources ``trtcas worker start --sm ...`` would give it (``trtcas.worker``)
and its own local cache directory (``TRTCAS_CACHE_DIR`` of its workers), as separate hosts
would have. Ray binds the machine's network interface, so callers run this only inside a
network namespace of their own (``in_network_namespace``), where it binds 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

NETNS_ENV = "TRTCAS_TEST_NETNS"  # set inside the namespace the wrapper test made


def in_network_namespace() -> bool:
    return os.environ.get(NETNS_ENV) == "1"


def run_in_network_namespace(pytest_args: list[str], tmp: Path, timeout: float) -> subprocess.CompletedProcess:
    """Run pytest on ``pytest_args`` in a fresh network namespace with only loopback up (root)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        raise RuntimeError("the Ray farm tests need root with unshare and ip (util-linux, iproute2) for a network namespace")
    repo = Path(__file__).resolve().parents[2]
    env = dict(os.environ)
    env[NETNS_ENV] = "1"
    env["RAY_TMPDIR"] = str(tmp)  # Ray's sockets and session files: ours alone, short path
    env["PYTHONPATH"] = os.pathsep.join([str(repo / "tests"), str(repo / "examples"), env.get("PYTHONPATH", "")])
    env.pop("RAY_ADDRESS", None)
    inner = " ".join([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *pytest_args])
    return subprocess.run(["unshare", "-n", "sh", "-c", f"ip link set lo up && exec {inner}"], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=timeout)


@dataclass
class FakeFleet:
    """A running cluster: ``nodes`` by label (Ray node objects), their caches under ``root``."""

    cluster: Any
    root: Path
    nodes: dict[str, Any] = field(default_factory=dict)
    sms: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return self.cluster.address

    def node_id(self, label: str) -> str:
        return self.nodes[label].node_id

    def label_of(self, node_id: str) -> str:
        for label, node in self.nodes.items():
            if node.node_id == node_id:
                return label
        known = {label: node.node_id for label, node in self.nodes.items()}
        raise AssertionError(f"{node_id} is none of the worker nodes {known} (head: {self.cluster.head_node.node_id})")

    def live_nodes(self) -> list[dict]:
        """Ray's node table (no driver connection needed: this process owns the cluster)."""
        return [n for n in self.cluster.global_state.node_table() if n["Alive"]]

    def cache_dir(self, label: str) -> Path:
        return self.root / f"cache-{label}"

    def add(self, label: str, sms: tuple[str, ...]) -> None:
        from trtcas.worker import host_offer

        resources = host_offer(sms).resources()
        # Each fake host on its own loopback address (127.0.0.2, ...): drivers on 127.0.0.1
        # then attach to the head, never to a worker a test may kill.
        self.nodes[label] = self.cluster.add_node(
            num_cpus=1, resources=resources, node_ip_address=f"127.0.0.{2 + len(self.sms)}",
            env_vars={"TRTCAS_CACHE_DIR": str(self.cache_dir(label))})
        self.sms[label] = sms

    def kill(self, label: str) -> None:
        """The node dies at once (its raylet and workers are killed), as a host that lost power."""
        self.cluster.remove_node(self.nodes.pop(label), allow_graceful=False)


@contextmanager
def fake_fleet(root: Path, fleet: Mapping[str, tuple[str, ...]]) -> Iterator[FakeFleet]:
    """A head that runs nothing (no CPUs, no trtcas resources) and one node per ``fleet`` entry."""
    from ray.cluster_utils import Cluster

    if not in_network_namespace():
        raise RuntimeError("start Ray clusters only inside the test's network namespace")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    farm = FakeFleet(cluster, root)
    try:
        for label, sms in fleet.items():
            farm.add(label, sms)
        cluster.wait_for_nodes()
        yield farm
    finally:
        cluster.shutdown()
