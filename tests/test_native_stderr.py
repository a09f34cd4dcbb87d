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


def test_a_log_forwarded_to_stderr_does_not_feed_back_into_the_redirect(capfd):
    """A build's log forwarded live to something that writes to fd 2 (an API caller's
    reporter printing each line, under a lock as a progress display does) while fd 2 is
    redirected: a native line is recorded once and not forwarded, so nothing is read back
    from the pipe it was written to. Before, each forwarded line came back as a new native
    line, forever, and once the pipe was full its only reader blocked writing to it (a
    build waiting on the display's lock then hung)."""
    from trtcas.rules.trt.backend import load_backend

    pytest.importorskip("tensorrt_rtx", reason="the build logger is TensorRT's ILogger")
    logger = load_backend("tensorrt_rtx").logger("info")
    display = threading.Lock()

    def print_to_stderr(line):
        with display:
            os.write(2, f"live: {line}\n".encode())

    logger.forward = print_to_stderr
    lines = [f"native line {i:04d} " + "x" * 80 for i in range(1000)]  # ~100 KB: more than a pipe holds
    done = threading.Event()

    def write_natively():
        with native_stderr_to(logger.native):
            for line in lines:
                os.write(2, (line + "\n").encode())
        done.set()

    writer = threading.Thread(target=write_natively, daemon=True)
    writer.start()
    assert done.wait(20), "the redirect hung"
    assert [line.split("] ", 1)[1] for line in logger.lines] == lines
    assert "live:" not in capfd.readouterr().err
