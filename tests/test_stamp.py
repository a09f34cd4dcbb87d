"""A build whose stamp still holds is answered without planning; anything it depended on
changing sends the next build through the full path (which is always right)."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import trtcas
from trtcas.cas.content_store import ContentStore
from trtcas.cas.digest import Digest
from trtcas.graph import stamp

from make_models import write_models

EXAMPLES = Path(__file__).parent.parent / "examples"


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.setattr(stamp, "GRANULARITY_NS", 0)  # files made just now count as settled
    root = tmp_path / "conv"
    shutil.copytree(EXAMPLES / "conv", root)
    write_models(tmp_path / "models")
    shutil.copy(tmp_path / "models" / "conv_block.onnx", root / "model.onnx")
    return root


def build(root, **kw):
    result = trtcas.build(root / "trtcas.toml", cache_dir=root.parent / "cache", **kw)
    assert result.ok, result.to_json()
    return result


def answered_by_stamp(result) -> bool:
    return all(a.status == "cached" and a.seconds == 0.0 for a in result.actions)


def test_an_unchanged_build_is_answered_from_its_stamp(project):
    first = build(project)
    engine = project / "out" / "engines" / "rank0.engine"
    before = engine.stat()
    second = build(project)
    assert answered_by_stamp(second) and {a.id for a in second.actions} == {a.id for a in first.actions}
    assert [a.key for a in second.actions] == [a.key for a in first.actions]
    assert engine.stat().st_ino == before.st_ino and engine.stat().st_mtime_ns == before.st_mtime_ns
    assert second.outputs == first.outputs


@pytest.mark.parametrize("change", ["source", "output", "config", "environment", "evicted"])
def test_anything_the_build_depended_on_changing_takes_the_full_path(project, monkeypatch, change):
    first = build(project)
    build(project)
    engine = project / "out" / "engines" / "rank0.engine"
    overrides = ()
    if change == "source":
        write_models(project.parent / "models", weights_seed=5)
        shutil.copy(project.parent / "models" / "conv_block.onnx", project / "model.onnx")
    elif change == "output":
        engine.unlink()
    elif change == "config":
        overrides = ("engine.optimization_level=2",)
    elif change == "environment":
        monkeypatch.setenv("TRTCAS_ASSUME_NO_GPU", "1")
    elif change == "evicted":
        store = ContentStore(project.parent / "cache")
        key = Digest.parse(first.action("engine[rank0]").key)
        store.layout.action_entry(key.hex).unlink()
    again = build(project, overrides=overrides)
    assert not answered_by_stamp(again)
    assert engine.is_file()
    if change in ("source", "config", "evicted"):
        assert again.action("engine[rank0]").status == "built"


def test_dry_runs_plan_and_a_selection_of_actions_has_its_own_stamp(project):
    build(project)
    dry = trtcas.build(project / "trtcas.toml", cache_dir=project.parent / "cache", dry_run=True)
    assert dry.ok and dry.dry_run
    selected = build(project, actions=["network[rank0]"])
    assert [a.id for a in selected.actions] == ["network[rank0]"]
    again = build(project, actions=["network[rank0]"])
    assert answered_by_stamp(again) and [a.id for a in again.actions] == ["network[rank0]"]
    whole = build(project)  # the selection's stamp is not the whole target's
    assert {a.id for a in whole.actions} == {"network[rank0]", "engine[rank0]"}


def test_the_planner_reads_are_watched(tmp_path):
    seen_file = tmp_path / "read.txt"
    seen_file.write_text("x")
    with stamp.watch_reads() as reads:
        seen_file.read_text()
        os.listdir(tmp_path)
    assert str(seen_file) in reads and str(tmp_path) in reads


def test_a_no_op_process_imports_no_tensorrt_networkx_numpy_or_blob_code(project):
    build(project)
    build(project)
    script = (
        "import sys, trtcas\n"
        f"r = trtcas.build({str(project / 'trtcas.toml')!r}, cache_dir={str(project.parent / 'cache')!r})\n"
        "assert r.ok and all(a.status == 'cached' for a in r.actions), r.to_json()\n"
        "print(sorted(m for m in ('tensorrt_rtx', 'networkx', 'numpy', 'onnx', 'zstandard', 'msgpack',\n"
        "                         'trtcas.cas.blobstore', 'trtcas.cas.actioncache', 'socket') if m in sys.modules))\n"
    )
    time.sleep(2.1)  # fresh processes apply the real clock rule: let the files settle, stamp again
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=project)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_no_op_cli_off_a_terminal_does_not_load_the_terminal_display(project):
    """Off a terminal the progress display writes plain lines: rich is not even imported."""
    build(project)
    build(project)
    time.sleep(2.1)
    script = (
        "import sys\n"
        "from trtcas.cli import main\n"
        "try:\n"
        f"    main(['build', {str(project / 'trtcas.toml')!r}, '--cache-dir', {str(project.parent / 'cache')!r}])\n"
        "except SystemExit as exit:\n"
        "    assert not exit.code, exit.code\n"
        "print('rich loaded' if any(m.startswith('rich') for m in sys.modules) else 'no rich', file=sys.stderr)\n"
    )
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=project,
                             env={k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE",
                                                                                   "TTY_INTERACTIVE", "FORCE_TERMINAL")})
    assert out.returncode == 0, out.stderr
    assert "cached" in out.stderr and out.stderr.strip().endswith("no rich"), out.stderr
