"""Shared fixtures. Helpers live in support/ (servers, fault proxy, test rules, doubles)."""

import pytest

from trtcas.cas.content_store import ContentStore

from support import graph_rules
from support.remote_fixtures import (  # noqa: F401  (fixtures, used by name)
    machine_a,
    machine_b,
    nginx,
    nginx_basic,
    nginx_tls,
    nginx_token,
    proxy,
)

graph_rules.register()  # the test.* rules of the graph tests; the package ships none


@pytest.fixture
def store(tmp_path):
    """A fresh cache directory."""
    return ContentStore(tmp_path / "cache")


@pytest.fixture
def refit_double():
    """The named refit test double (support/refit_double.py) as ``engine.backend``."""
    from trtcas.rules.trt.toolchain import TOOLCHAINS

    from support.refit_double import NAME, refit_test_double

    TOOLCHAINS.register(NAME, refit_test_double)
    yield NAME
    TOOLCHAINS.unregister(NAME)
