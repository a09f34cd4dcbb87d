"""In-order results of work spread over a thread pool, with a bounded window in flight.

``Executor.map`` submits every item at once and holds every result; the store's pipelines
(blocks of a frame on the codec pool, tensors on the store's writers) must hold only a
few, and must be able to reuse a buffer once its item was consumed. Item ``i + window`` is
submitted only after result ``i`` was taken and the consumer asked for the next. Closed
early (an error, a consumer giving up), it waits for the work in flight, so nothing still
writes into a caller's buffers after it returns.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Executor, Future, wait
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def ordered_results(pool: Executor, fn: Callable[[T], R], items: Iterable[T], window: int) -> Iterator[R]:
    """``map(fn, items)`` on ``pool``, in order, at most ``window`` items in flight."""
    pending: deque[Future] = deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= max(1, window):
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
        wait(pending)
