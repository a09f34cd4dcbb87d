"""The shape of the code itself: layering, lazy TensorRT, module size, registries, seams."""

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import trtcas
from trtcas.errors import TrtcasError
from trtcas.graph.rule import RULES
from trtcas.graph.runner import ActionRunner
from trtcas.graph.schedulers import SCHEDULERS, open_scheduler
from trtcas.graph.schedulers.threads import ThreadScheduler
from trtcas.registry import Registry, UnknownEntry

PACKAGE = Path(trtcas.__file__).parent
MAX_MODULE_LINES = 600


def all_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages([str(PACKAGE)], prefix="trtcas."))


def test_importing_every_module_imports_no_tensorrt():
    script = (
        "import importlib, json, sys\n"
        f"for name in {all_modules()!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorrt', 'tensorrt_rtx', 'tensorrt_llm'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == []


def test_no_module_is_over_the_size_limit():
    sizes = {str(p.relative_to(PACKAGE)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES} == {}


def test_the_package_ships_no_test_double():
    text = "\n".join(p.read_text() for p in PACKAGE.rglob("*.py"))
    assert "refit-test-double" not in text and "register_test_double" not in text


def test_builtin_rules_planners_and_architectures_come_from_entry_points():
    from trtcas.graph.dag import PLANNERS
    from trtcas.rules.llm.architectures import ARCHITECTURES
    from trtcas.rules.trt.toolchain import TOOLCHAINS

    assert {"trt.network", "trt.engine", "trt.refit", "llm.convert"} <= set(RULES.names())
    assert {"onnx", "llm"} <= set(PLANNERS.names())
    assert "LlamaForCausalLM" in ARCHITECTURES.names()
    assert {"auto", "tensorrt", "tensorrt_rtx"} <= set(TOOLCHAINS.names())
    assert "threads" in SCHEDULERS.names()


def test_a_registry_says_what_it_knows_when_asked_for_something_else():
    registry: Registry[int] = Registry("widget", builtin={"one": 1})
    registry.register("two", 2)
    assert registry.get("two") == 2 and registry.names() == ["one", "two"]
    with pytest.raises(UnknownEntry, match=r"unknown widget 'three' \(known: one, two\)"):
        registry.get("three")
    assert isinstance(UnknownEntry("x"), TrtcasError)


def test_another_scheduler_plugs_in_without_touching_the_runner(tmp_path):
    """A scheduler that runs rules elsewhere supplies ``invoke``; the runner still decides
    keys and hits here, and a fully cached build invokes nothing."""
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "trtcas.toml").write_text(
        '[[action]]\nid = "read"\nrule = "test.read"\ninputs = { src = "a.txt" }\n'
        '[[action]]\nid = "upper"\nrule = "test.upper"\ninputs = { text = "@read:out" }\n'
    )
    invoked: list[str] = []

    class RecordingScheduler(ThreadScheduler):
        name = "recording"

        def execute(self, graph, runner: ActionRunner, dry_run, reporter):
            def invoke(invocation):
                invoked.append(invocation.action.id)
                return runner.local_invoke(invocation)

            self.invoke = invoke
            return super().execute(graph, runner, dry_run, reporter)

    SCHEDULERS.register("recording", RecordingScheduler)
    try:
        first = trtcas.build(tmp_path / "trtcas.toml", cache_dir=tmp_path / "cache", scheduler="recording")
        second = trtcas.build(tmp_path / "trtcas.toml", cache_dir=tmp_path / "cache", scheduler="recording")
    finally:
        SCHEDULERS.unregister("recording")
    assert first.ok and second.ok
    assert invoked == ["read", "upper"]
    assert {a.status for a in second.actions} == {"cached"}
    assert isinstance(open_scheduler("threads", jobs=3), ThreadScheduler)
