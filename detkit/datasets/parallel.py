"""An order-preserving parallel map with bounded look-ahead, for reading and validating images."""
from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Deque, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int = 2,
                lookahead: int = 16) -> Iterator[tuple[T, R]]:
    """Yield (item, fn(item)) in input order; at most `lookahead` results are held in memory.

    Threads suffice: Pillow and file reads release the GIL. Closing the generator early
    (e.g. --limit-examples reached) cancels the work not yet started.
    """
    if workers <= 1:
        for item in items:
            yield item, fn(item)
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="detkit-read")
    pending: Deque[tuple[T, Future]] = deque()
    try:
        for item in items:
            pending.append((item, pool.submit(fn, item)))
            if len(pending) >= lookahead:
                head, future = pending.popleft()
                yield head, future.result()
        while pending:
            head, future = pending.popleft()
            yield head, future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
