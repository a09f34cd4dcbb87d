"""The ``ray`` scheduler: actions that must run go to a Ray cluster, each where it can be built.

Keys, hits, in-build dedup and per-key locks stay with the ``ActionRunner`` on the calling
host (this scheduler walks the DAG with the local thread pool); only the ``invoke`` of an
action that must run differs: it becomes a Ray task that asks for the resources the action's
rule names (``graph.placement``: ``trtcas/sm86``, ``trtcas/tensorrt_rtx=1.7.1.116`` ...), so
Ray starts it on a host that offers them (``trtcas worker start``). Inputs and outputs move
through the shared cache (``farm_data``), the task body is ``farm_worker.run_on_worker``.

Ray is imported on first use and the cluster is joined only when the first action misses:
a fully cached build starts no Ray task and never connects. At that point every action of
the graph is checked against the live nodes, so a fleet that cannot build one of them fails
before anything is sent, naming the resource nobody offers. A task whose worker dies is
retried by Ray on another node (``max_retries``); if no live node can run it any more, the
action fails with that reason instead of waiting for ever.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
import time
from typing import Any

import networkx as nx

from trtcas.cas.actioncache import ActionResult
from trtcas.errors import TrtcasError
from trtcas.graph.context import ActionFailed
from trtcas.graph.placement import Node, action_needs, check_placeable, requested_resources, unplaceable
from trtcas.graph.result import ActionRecord
from trtcas.graph.runner import ActionRunner, Invocation
from trtcas.graph.schedulers import Reporter
from trtcas.graph.schedulers.threads import ThreadScheduler

INSTALL_HINT = "pip install 'trtcas[ray]'"
FEASIBILITY_CHECK_S = 5.0  # how often a waiting task checks that a live node can still run it

log = logging.getLogger(__name__)


def import_ray() -> Any:
    """The ``ray`` module, or the one-line error saying how to get it."""
    try:
        import ray
    except ImportError:
        raise TrtcasError(f"the ray scheduler needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A quick TCP connect to ``host:port`` first: Ray itself retries an unreachable head
    for about a minute before it gives up."""
    host, sep, port = address.rpartition(":")
    if "://" in address or not sep or not port.isdigit():
        return  # "auto", ray://...: Ray's own resolution
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise TrtcasError(f"cannot reach the Ray head at {address} ({exc.strerror or exc}); start it with "
                          "`ray start --head --port PORT` or fix --ray-address / [execution] address") from None


def live_nodes(ray: Any) -> list[Node]:
    return [Node(n["NodeID"], n.get("NodeManagerHostname", "?"), frozenset(n.get("Resources", {})))
            for n in ray.nodes() if n.get("Alive")]


class RayScheduler:
    """Factory ``(jobs=..., address=..., remote=..., remote_upload=..., max_retries=...)``.

    ``jobs`` is how many actions are in flight on the farm at once; ``address`` the Ray
    cluster (default ``$RAY_ADDRESS``, else a cluster started on this host by ``ray start``);
    ``remote`` the shared cache URL workers read inputs from and write outputs to.
    """

    name = "ray"

    def __init__(self, jobs: int = 2, address: str | None = None, remote: str | None = None,
                 remote_upload: bool = True, max_retries: int = 3):
        self.ray = import_ray()
        self.jobs = max(1, jobs)
        self.address = address
        self.remote_url = remote
        self.remote_upload = remote_upload
        self.max_retries = max_retries
        self._lock = threading.Lock()
        self._staging: Any = None
        self._task: Any = None
        self._graph: nx.DiGraph | None = None
        self._runner: ActionRunner | None = None
        self._fatal: str | None = None
        self._joined = False  # this scheduler called ray.init (and so shuts it down)
        self.tasks_sent = 0

    def execute(self, graph: nx.DiGraph, runner: ActionRunner, dry_run: bool, reporter: Reporter) -> list[ActionRecord]:
        self._graph, self._runner = graph, runner
        try:
            records = ThreadScheduler(self.jobs, invoke=self.invoke).execute(graph, runner, dry_run, reporter)
        finally:
            if self._joined:  # leave as we came: no Ray threads printing after the build
                self.ray.shutdown()
        if self._fatal:  # no farm, or one that cannot build the target: a build error, not an action's
            raise TrtcasError(self._fatal)
        if runner.node_id is None:
            return records
        return [r if r.node_id else dataclasses.replace(r, node_id=runner.node_id) for r in records]

    # ---- joining the cluster --------------------------------------------------------------
    def _connect(self) -> None:
        with self._lock:
            if self._staging is not None:
                return
            if self._fatal:
                raise TrtcasError(self._fatal)
            try:
                self._join()
            except TrtcasError as exc:
                self._fatal = str(exc)
                raise

    def _join(self) -> None:
        """Connect (unless this process already is), note our node, check the fleet, get ready."""
        ray, runner = self.ray, self._runner
        if not ray.is_initialized():
            address = self.address or os.environ.get("RAY_ADDRESS") or "auto"
            check_reachable(address)
            ray_log = logging.getLogger("ray")
            level = ray_log.level
            ray_log.setLevel(logging.ERROR)  # not "SIGTERM handler is not set ..." from a pool thread
            try:
                ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR,
                         configure_logging=False)
                self._joined = True
            except Exception as exc:
                raise TrtcasError(
                    f"cannot join the Ray cluster at {address} ({type(exc).__name__}: {' '.join(str(exc).split())[:300]}); "
                    "start one (`ray start --head` on the head, `trtcas worker start --address ADDR` on workers) "
                    "or pass --ray-address") from None
            finally:
                ray_log.setLevel(level)
        runner.node_id = ray.get_runtime_context().get_node_id()
        check_placeable(self._wanted(), live_nodes(ray))
        from trtcas.graph.schedulers.farm_data import DriverStaging
        from trtcas.graph.schedulers.farm_worker import run_on_worker

        remote = getattr(runner.tier, "remote", None) if self.remote_url else None
        self._task = ray.remote(run_on_worker)
        self._staging = DriverStaging(runner.store, remote, ray.put)

    def _wanted(self) -> list[tuple[str, tuple[str, ...]]]:
        """(action id, needed resources) for every action of the graph."""
        runner, wanted = self._runner, []
        for node in nx.lexicographical_topological_sort(self._graph):
            action = self._graph.nodes[node]["action"]
            rule = runner.registry.get(action.rule)
            env = runner.fingerprint.select(rule.env_fields(action.params))
            wanted.append((action.id, action_needs(rule, action.params, env)))
        return wanted

    # ---- one action -----------------------------------------------------------------------
    def invoke(self, invocation: Invocation) -> ActionResult:
        self._connect()
        action = invocation.action
        rule = self._runner.registry.get(action.rule)
        needs = action_needs(rule, action.params, invocation.key.components.get("env", {}))
        shipment = self._staging.stage(invocation.inputs, invocation.sources)
        task = self._task.options(resources=requested_resources(needs), num_cpus=1, max_retries=self.max_retries,
                                  retry_exceptions=False, name=action.id)
        ref = task.remote(invocation, rule, shipment, self.remote_url, self.remote_upload,
                          self._runner.store.algo, time.time())
        with self._lock:
            self.tasks_sent += 1
        reply = self._await(ref, action.id, needs)
        self._staging.receive(reply.produced, reply.returned)
        return reply.result

    def _await(self, ref: Any, action_id: str, needs: tuple[str, ...]) -> Any:
        ray = self.ray
        while True:
            done, _ = ray.wait([ref], timeout=FEASIBILITY_CHECK_S)
            if done:
                break
            why = unplaceable(action_id, needs, live_nodes(ray))
            if why:
                ray.cancel(ref, force=True)
                raise ActionFailed(why)
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, TrtcasError):
                raise ActionFailed(str(cause)) from None
            raise ActionFailed(f"on the build farm: {type(cause or exc).__name__}: {cause or exc}") from None
        except ray.exceptions.RayError as exc:
            raise ActionFailed(
                f"the build farm lost it ({type(exc).__name__}) after {self.max_retries} retries; "
                "nothing was stored, build again") from None
