"""Key canonicalisation properties: what must not change a key, and what must."""

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trtcas.cas.digest import hash_bytes
from trtcas.graph.action import NotCanonical, compute_key

scalars = st.one_of(st.integers(-10**6, 10**6), st.text(max_size=8), st.booleans(), st.none(),
                    st.floats(allow_nan=False, allow_infinity=False, width=32))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)), max_leaves=12)
params_st = st.dictionaries(st.text(min_size=1, max_size=8), values, min_size=1, max_size=6)
INPUTS = {"network": hash_bytes(b"net"), "weights": hash_bytes(b"w")}
ENV = {"tensorrt_rtx_version": "1.7.1.116", "gpu_sm": None}


def key(params, inputs=INPUTS, env=ENV, rule="trt.engine", version=1):
    return compute_key(rule, version, params, inputs, env, "blake3").digest


def shuffled(value, rng):
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: shuffled(v, rng) for k, v in items}
    if isinstance(value, list):
        return [shuffled(v, rng) for v in value]
    return value


def floatify(value):
    """3 -> 3.0 everywhere (bools stay bools)."""
    if isinstance(value, dict):
        return {k: floatify(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(floatify(v) for v in value)  # tuples and lists are the same too
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**53:
        return float(value)
    return value


@given(params_st, st.randoms())
def test_map_order_never_changes_a_key(params, rnd):
    assert key(params) == key(shuffled(params, random.Random(rnd.random())))
    assert key(params, inputs=dict(reversed(list(INPUTS.items())))) == key(params)


@given(params_st)
def test_int_and_float_forms_never_change_a_key(params):
    assert key(params) == key(floatify(params))


def leaves(value, path=()):
    if isinstance(value, dict) and value:
        for k, v in value.items():
            yield from leaves(v, path + (k,))
    elif isinstance(value, list) and value:
        for i, v in enumerate(value):
            yield from leaves(v, path + (i,))
    else:
        yield path, value


def replaced(value, path, new):
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = replaced(value[path[0]], path[1:], new)
    return copy


def different(old):
    if isinstance(old, bool):
        return not old
    if isinstance(old, (int, float)):
        return old + 1 if abs(old) < 2**52 else old / 2  # stay within exact float range
    if isinstance(old, str):
        return old + "x"
    return "was-none" if old is None else None


@given(params_st, st.data())
def test_any_change_of_a_declared_value_changes_the_key(params, data):
    path, old = data.draw(st.sampled_from(list(leaves(params))))
    assert key(params) != key(replaced(params, path, different(old)))


@given(params_st)
def test_inputs_env_rule_and_version_are_all_in_the_key(params):
    base = key(params)
    assert key(params, inputs={**INPUTS, "weights": hash_bytes(b"w2")}) != base
    assert key(params, env={**ENV, "tensorrt_rtx_version": "1.8.0"}) != base
    assert key(params, env={**ENV, "gpu_sm": "sm86"}) != base
    assert key(params, rule="trt.other") != base
    assert key(params, version=2) != base


def test_bool_is_not_int_and_none_is_not_missing():
    assert key({"a": True}) != key({"a": 1})
    assert key({"a": None}) != key({})
    assert key({"a": [1, 2]}) != key({"a": [2, 1]})  # list order is meaningful


def test_paths_cannot_enter_a_key():
    with pytest.raises(NotCanonical, match="declare it as an input"):
        key({"plugin": Path("/opt/plugin.so")})


# ---- a target file's form never changes a key (real builds, TensorRT-RTX on the CPU) --------
CONV = {"target": {"name": "conv"}, "model": {"onnx": "model.onnx"},
        "engine": {"backend": "auto", "targets": ["sm86"], "optimization_level": 3, "refit": "auto"},
        "output": {"dir": "out"}}


def _toml_value(value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return f'"{value}"' if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)


def _written(config, rng: random.Random) -> str:
    """``config`` as TOML in a random form: section and key order, spacing, comments, and
    sometimes a section as an inline table."""
    lines = [f"# {rng.random()}"] if rng.random() < 0.5 else []
    sections = rng.sample(list(config.items()), len(config))
    inline = {name for name, _ in sections if rng.random() < 0.25}  # top-level keys: before any [header]
    for section, table in sorted(sections, key=lambda item: item[0] not in inline):
        items = rng.sample(list(table.items()), len(table))
        pad = " " * rng.randint(0, 3)
        if section in inline:
            lines.append(f"{section}{pad}={pad}{{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in items) + " }")
            continue
        lines.append(f"[{section}]" + (f"   # {section}" if rng.random() < 0.5 else ""))
        for k, v in items:
            comment = f"  # {rng.randint(0, 99)}" if rng.random() < 0.5 else ""
            lines.append(f"{' ' * rng.randint(0, 2)}{k}{pad}={pad}{_toml_value(v)}{comment}")
        lines += [""] * rng.randint(0, 2)
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def conv_project(tmp_path_factory):
    import onnx

    import trtcas

    import make_models

    root = tmp_path_factory.mktemp("conv")
    onnx.save(make_models.make_conv_block(seed=0), str(root / "model.onnx"))
    (root / "trtcas.toml").write_text(_written(CONV, random.Random(0)))
    result = trtcas.build(root / "trtcas.toml", cache_dir=root / "cache")
    assert result.ok, result.error
    return root, {r.id: r.key for r in result.actions}


@settings(max_examples=8, deadline=None)
@given(st.randoms(use_true_random=False))
def test_rewriting_a_target_file_in_another_form_keeps_every_key(conv_project, rnd):
    import trtcas

    root, keys = conv_project
    (root / "trtcas.toml").write_text(_written(CONV, random.Random(rnd.random())))
    # a dry run plans and keys every action (a build could be answered from its stamp instead)
    result = trtcas.build(root / "trtcas.toml", cache_dir=root / "cache", dry_run=True)
    assert result.ok, result.error
    assert {r.id: (r.key, r.status) for r in result.actions} == {i: (k, "cached") for i, k in keys.items()}
