"""Target files several test modules build."""

# The conv example target (examples/conv), with the backend left open.
CONV_TARGET = """
[target]
name = "conv"
[model]
onnx = "model.onnx"
[engine]
backend = "{backend}"
targets = ["sm86"]
optimization_level = 3
"""

# A tp=2 tiny Llama (examples/make_tiny_llama.py in ./hf) with an engine matrix of two SMs:
# per rank, engine[rankN,sm86] and engine[rankN,sm120].
LLM_MATRIX_TARGET = """
[target]
name = "llm"
[model]
hf = "hf"
dtype = "float32"
max_batch_size = 1
max_seq_len = 8
[parallel]
tp = 2
[engine]
backend = "tensorrt_rtx"
matrix = [{ targets = ["sm86"] }, { targets = ["sm120"] }]
"""

def conv_project(root, backend: str = "auto", name: str = "conv"):
    """A conv target dir (trtcas.toml + model.onnx) at ``root``; returns ``root``."""
    import onnx

    import make_models  # examples/ is on the test path

    root.mkdir(parents=True, exist_ok=True)
    (root / "trtcas.toml").write_text(CONV_TARGET.format(backend=backend).replace('name = "conv"', f'name = "{name}"'))
    onnx.save(make_models.make_conv_block(seed=0), str(root / "model.onnx"))
    return root


def run_cli(*args, cwd=None, env=None, check=None):
    """``trtcas ARGS`` in a subprocess (off a terminal, as in CI); returns CompletedProcess."""
    import os
    import subprocess
    import sys

    full_env = {**os.environ, **(env or {})}
    done = subprocess.run([sys.executable, "-m", "trtcas.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=full_env)
    if check is not None:
        assert (done.returncode == 0) == check, (done.returncode, done.stdout, done.stderr)
    return done


def one_error_line(done) -> str:
    """The run failed with exactly one ``trtcas: error:`` line on stderr and no traceback."""
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("trtcas: error:")]
    assert len(errors) == 1, done.stderr
    return errors[0]
