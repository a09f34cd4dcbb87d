"""A test rule for the build-farm tests: it announces where it runs, then takes its time.

``test.slow_on`` writes ``<marker dir>/<action id>.<node id>`` when it starts (so a test
can see which Ray node runs it and kill that node mid-action), sleeps ``sleep`` seconds,
and returns its ``src`` input doubled. It needs the farm resources listed in its ``needs``
param. Registered by the farm tests only; the package ships no such rule.
"""

import os
import time
from pathlib import Path

from trtcas.graph.rule import RULES, Rule


def _slow_on(ctx):
    import ray

    node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"
    marker = Path(ctx.params["marker_dir"]) / f"{ctx.action_id}.{node}"
    marker.write_text(str(os.getpid()))
    time.sleep(float(ctx.params.get("sleep", 0)))
    return {"out": ctx.input_bytes("src") * 2}


SLOW_RULE = Rule("test.slow_on", 1, _slow_on, cosmetic_params=frozenset({"marker_dir", "sleep", "needs"}),
                 placement=lambda params, env: tuple(params.get("needs", ())))


def register() -> None:
    RULES.register(SLOW_RULE.name, SLOW_RULE)
