"""The smallest LLM target file the placement and convert tests build (an fp16 HF checkpoint
in ``hf/`` next to it, one rank, a CPU-buildable engine)."""

LLM_TARGET = """
[target]
name = "{name}"
[model]
hf = "hf"
dtype = "float16"
max_batch_size = 1
max_seq_len = 8
[engine]
targets = ["sm86"]
[output]
checkpoint = {checkpoint}
"""


def llm_target(name: str, checkpoint: bool = True) -> str:
    return LLM_TARGET.format(name=name, checkpoint=str(checkpoint).lower())
