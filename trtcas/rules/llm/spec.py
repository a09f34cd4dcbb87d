"""What a conversion is asked for: parallelism, target dtype, quantization, embedding sharding.
"""

from __future__ import annotations

from dataclasses import dataclass

from trtcas.errors import TrtcasError

TARGET_DTYPES = ("float16", "bfloat16", "float32")
QUANT_ALGOS = (None, "W8A16")
_CODE_OF_TARGET = {"float16": "F16", "bfloat16": "BF16", "float32": "F32"}
class ConvertError(TrtcasError):
    """A checkpoint or conversion request that cannot be converted as asked."""


# --------------------------------------------------------------------------- the request


@dataclass(frozen=True)
class ConvertSpec:
    """What to convert to: parallelism, target dtype, quantization, embedding sharding.

    Every field changes the converted bytes, so all of them belong in a conversion's cache key.
    """

    tp: int = 1
    pp: int = 1
    dtype: str = "float16"
    quantization: str | None = None
    vocab_parallel: bool = False

    def __post_init__(self) -> None:
        for name in ("tp", "pp"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConvertError(f"{name} must be a positive integer, got {value!r}")
        if self.dtype not in TARGET_DTYPES:
            raise ConvertError(f"unknown dtype {self.dtype!r}; use one of {', '.join(TARGET_DTYPES)}")
        if self.quantization not in QUANT_ALGOS:
            raise ConvertError(f"unsupported quantization {self.quantization!r}; use none or W8A16")

    @property
    def world_size(self) -> int:
        return self.tp * self.pp
