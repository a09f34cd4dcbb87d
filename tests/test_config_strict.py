"""Strict target files: every unknown section or key, in the file or through --set, is one
error line with the nearest valid name; contradictory settings are errors; the API takes a
mapping of overrides. Bad values fail before any build, with no traceback."""

from pathlib import Path

import pytest

import trtcas
from trtcas.config import find_targets, load_config
from trtcas.errors import TrtcasError

from support.targets import conv_project, one_error_line, run_cli


@pytest.fixture
def conv(tmp_path):
    return conv_project(tmp_path / "conv")


def build(root: Path, *args):
    return run_cli("build", root / "trtcas.toml", "--cache-dir", root.parent / "cache", *args)


@pytest.mark.parametrize("setting, expected", [
    ("outptu.dir=\"x\"", "unknown section [outptu]; did you mean 'output'?"),
    ("model.nmae=1", "unknown setting [model] nmae"),
    ("foo.bar=1", "unknown section [foo]"),
    ("engine.optimisation_level=4", "did you mean 'optimization_level'?"),
    ("output.dri=\"x\"", "did you mean 'dir'?"),
    ("target.nmae=\"x\"", "did you mean 'name'?"),
    ("parallel.tp=4", "[parallel] is for llm targets, not this onnx target"),
    ("model.hf=\"hf\"", "[model] hf and [model] onnx cannot be used together"),
    ("engine=4", "[engine] must be a table"),
    ("engine.profiles=\"x\"", "profiles must be a list of tables"),
    ("engine.profiles={ x = 1 }", "profiles must be a list of tables"),
    ("engine.profiles=[{ x = 1 }]", "give { min = [...], opt = [...], max = [...] }"),
    ("output.engine=\"{colour}.engine\"", "unknown field {colour}"),
    ("output.engine=\"../x.engine\"", "must be a file path inside [output] dir"),
    ("target.name=3", "[target] name must be a string"),
])
def test_bad_settings_through_set_are_one_line_and_build_nothing(conv, setting, expected):
    line = one_error_line(build(conv, "--set", setting))
    assert expected in line
    assert not (conv / "out").exists()


@pytest.mark.parametrize("extra, expected", [
    ("[outptu]\ndir = \"x\"\n", "unknown section [outptu]; did you mean 'output'?"),
    ("[parallel]\ntp = 4\n", "[parallel] is for llm targets"),
])
def test_bad_sections_in_the_file_name_the_file(conv, extra, expected):
    (conv / "trtcas.toml").write_text((conv / "trtcas.toml").read_text() + extra)
    line = one_error_line(build(conv))
    assert expected in line and str(conv / "trtcas.toml") in line


def test_the_model_table_is_checked_in_the_file_too(conv):
    text = (conv / "trtcas.toml").read_text().replace('onnx = "model.onnx"', 'onnx = "model.onnx"\nnmae = 1')
    (conv / "trtcas.toml").write_text(text)
    assert "unknown setting [model] nmae" in one_error_line(build(conv))


def test_llm_targets_are_strict_too(tmp_path):
    (tmp_path / "trtcas.toml").write_text('[model]\nhf = "hf"\n[paralel]\ntp = 2\n')
    with pytest.raises(TrtcasError, match=r"unknown section \[paralel\]; did you mean 'parallel'"):
        load_config(tmp_path / "trtcas.toml")
    (tmp_path / "trtcas.toml").write_text('[model]\ncheckpoint = "c"\n[parallel]\ntp = 2\ntpp = 1\n')
    with pytest.raises(TrtcasError, match=r"unknown setting \[parallel\] tpp; did you mean 'tp'"):
        load_config(tmp_path / "trtcas.toml")


def test_explicit_action_files_accept_only_their_sections(tmp_path):
    (tmp_path / "trtcas.toml").write_text('[[action]]\nid = "a"\nrule = "test.concat"\n[engine]\ntargets = []\n')
    with pytest.raises(TrtcasError, match=r"unknown section \[engine\]"):
        load_config(tmp_path / "trtcas.toml")


def test_overrides_as_a_mapping_or_one_string(conv):
    config = load_config(conv / "trtcas.toml", {"engine.optimization_level": 5, "output.dir": "variant"})
    assert config.data["engine"]["optimization_level"] == 5 and config.output_dir == conv / "variant"
    assert load_config(conv / "trtcas.toml", "engine.optimization_level=4").data["engine"]["optimization_level"] == 4
    with pytest.raises(TrtcasError, match="override engine.optimisation_level.*did you mean 'optimization_level'"):
        load_config(conv / "trtcas.toml", {"engine.optimisation_level": 5})
    result = trtcas.build(conv / "trtcas.toml", cache_dir=conv.parent / "cache", overrides={"engine.optimization_level": 2})
    assert result.ok and result.action("engine[rank0]").key_components["params"]["effective_config"]["optimization_level"] == 2


@pytest.mark.parametrize("args, expected", [
    (["--set", "output.dir=\"/proc/x\""], "output dir /proc/x cannot be written"),
    (["--profile", "/proc/x"], "--profile file /proc/x cannot be written"),
])
def test_unwritable_outputs_fail_before_the_build(conv, args, expected):
    done = build(conv, *args)
    assert expected in one_error_line(done)
    assert "built" not in done.stderr  # nothing ran


def test_an_output_dir_that_is_a_file_fails_before_the_build(conv):
    (conv / "afile").write_text("x")
    for value, expected in (("afile", "is a file"), ("afile/sub", "afile is a file, not a directory")):
        done = build(conv, "--set", f'output.dir="{value}"')
        assert expected in one_error_line(done) and "built" not in done.stderr


def test_cache_get_to_an_impossible_path_is_one_line(tmp_path):
    (tmp_path / "f").write_bytes(b"data")
    digest = run_cli("cache", "put", tmp_path / "f", "--cache-dir", tmp_path / "cache", check=True).stdout.strip()
    line = one_error_line(run_cli("cache", "get", digest, "-o", "/proc/x/y", "--cache-dir", tmp_path / "cache"))
    assert "/proc/x" in line


def test_find_targets_splits_files_directories_and_action_names(tmp_path):
    a, b = conv_project(tmp_path / "v/a", name="a"), conv_project(tmp_path / "v/b", name="b")
    targets, actions = find_targets([str(tmp_path / "v"), "engine[rank0]"])
    assert targets == [a / "trtcas.toml", b / "trtcas.toml"] and actions == ("engine[rank0]",)
    assert find_targets(["engine"]) == ([Path("trtcas.toml")], ("engine",))
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrtcasError, match="holds no trtcas.toml"):
        find_targets([str(tmp_path / "empty")])
