"""TensorRT's native code writes some lines straight to fd 2 (Myelin's CUDA check on a
GPU-less machine); they must land in the build's log, never on the user's terminal."""

import os
import threading

import onnx
import pytest

from trtcas.errors import TrtcasError
from trtcas.rules.trt.native_stderr import native_stderr_to

import make_models  # examples/ is on the test path


def test_raw_fd2_lines_go_to_the_sink_and_fd2_is_restored(capfd):
    seen = []
    with native_stderr_to(seen.append):
        os.write(2, b"Internal Error: something native\npartial")
    os.write(2, b"after\n")
    assert seen == ["Internal Error: something native", "partial"]
    assert capfd.readouterr().err == "after\n"


def test_concurrent_redirects_share_one_pipe_and_restore_once(capfd):
    seen_a, seen_b, inside = [], [], threading.Event()
    release = threading.Event()

    def other():
        with native_stderr_to(seen_b.append):
            inside.set()
            release.wait(5)

    worker = threading.Thread(target=other)
    with native_stderr_to(seen_a.append):
        worker.start()
        inside.wait(5)
        os.write(2, b"both\n")
    release.set()
    worker.join()
    os.write(2, b"restored\n")
    assert "both" in seen_a and "both" in seen_b
    assert capfd.readouterr().err == "restored\n"


def test_a_refittable_cpu_build_keeps_myelins_raw_line_in_the_log(tmp_path, capfd):
    from trtcas.rules.onnx_source.parse import parse_onnx
    from trtcas.rules.trt.backend import load_backend
    from trtcas.rules.trt.engine import EngineSpec, build_plan

    backend = load_backend("auto")
    if backend.capabilities.can_build_refittable:
        pytest.skip("this machine builds refittable engines: Myelin does not complain")
    onnx.save(make_models.make_conv_block(seed=0), str(tmp_path / "m.onnx"))
    parsed = parse_onnx(backend, tmp_path / "m.onnx")
    with pytest.raises(TrtcasError, match="refittable"):
        build_plan(backend, parsed, EngineSpec(targets=("sm86",)), True)
    assert "MyelinCheckException" not in capfd.readouterr().err
    assert any("MyelinCheckException" in line for line in parsed.logger.lines)
