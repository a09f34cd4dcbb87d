"""Shared fixtures. Helpers for the remote-cache tests live in remote_fixtures.py."""

import pytest

from trtcas.cas.content_store import ContentStore


@pytest.fixture
def store(tmp_path):
    """A fresh cache directory."""
    return ContentStore(tmp_path / "cache")
