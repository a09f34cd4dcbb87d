"""Key canonicalisation properties: what must not change a key, and what must."""

import random
from pathlib import Path

import pytest
from hypothesis import given
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
