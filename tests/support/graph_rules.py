"""Small rules for testing the graph engine without TensorRT.

Each run appends a line to $TRTCAS_TEST_RUNLOG (when set), so tests can count exactly
which actions ran, across processes.
"""

import os
import time
from pathlib import Path

from trtcas.errors import TrtcasError
from trtcas.graph.rule import RULES, Rule


def note_run(ctx):
    log = os.environ.get("TRTCAS_TEST_RUNLOG")
    if log:
        with open(log, "a") as f:
            f.write(ctx.action_id + "\n")


def _read(ctx):
    note_run(ctx)
    time.sleep(float(ctx.params.get("sleep", 0)))
    data = ctx.input_path("src").read_bytes()
    return {"out": data * int(ctx.params.get("repeat", 1))}


def _upper(ctx):
    note_run(ctx)
    return {"out": ctx.input_bytes("text").upper()}


def _concat(ctx):
    note_run(ctx)
    sep = str(ctx.params.get("sep", "+")).encode()
    parts = [ctx.input_bytes(name) for name in ctx.params["order"]]
    ctx.log(f"joined {len(parts)} parts")
    return {"out": sep.join(parts)}


def _fail(ctx):
    note_run(ctx)
    if Path(ctx.input_path("switch")).read_text().strip() == "fail":
        raise TrtcasError("the switch file says fail")
    return {"out": b"fine"}


TEST_RULES = (
    Rule("test.read", 1, _read, cosmetic_params=frozenset({"label", "sleep"}), param_defaults={"repeat": 1}),
    Rule("test.upper", 1, _upper, fingerprint_fields=("python",)),
    Rule("test.concat", 1, _concat, fingerprint_fields=("tensorrt_rtx_version",)),
    Rule("test.fail", 1, _fail),
)


def register() -> None:
    """Make the test.* rules known (tests register their rules; the package ships none)."""
    for rule in TEST_RULES:
        RULES.register(rule.name, rule)
