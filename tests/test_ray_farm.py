"""The build farm on a real Ray cluster: runs tests/ray_farm_cases.py in a network namespace.

Ray binds the machine's network interface; inside a namespace of its own with only loopback
up it binds 127.0.0.1, so the cluster, the nginx cache and every build talk over loopback
only. Needs root (CI runs as root); it fails rather than skips without it.
"""

import shutil
import tempfile
from pathlib import Path

import pytest

from support.ray_fleet import run_in_network_namespace


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ray_farm_cases_in_a_network_namespace():
    tmp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    try:
        done = run_in_network_namespace(["tests/ray_farm_cases.py"], tmp, timeout=560)
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    tail = (done.stdout[-6000:] + "\n" + done.stderr[-3000:]).strip()
    assert done.returncode == 0, tail
    assert "8 passed" in done.stdout, tail
