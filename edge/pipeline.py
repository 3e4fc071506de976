"""Decode ahead: images decoded on worker threads while the interpreter runs.

On a Raspberry Pi with a Coral, a camera photo takes ~100x longer to decode than to classify,
so classify and eval over a folder overlap decoding (Pillow releases the GIL while it decodes
and resizes) with inference. At most `depth` images are decoded or waiting at any time
(memory bounded: a few model-sized images, never the folder), and results come back in the
order of the input.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from concurrent.futures import Future
    from typing import TypeVar

    T = TypeVar("T")
    V = TypeVar("V")


def default_workers() -> int:
    """Decoder threads: one per CPU the process may use, at least 1, at most 4."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(4, n))


def decode_ahead(items: Sequence[T], decode: Callable[[T], V], workers: int | None = None,
                 depth: int | None = None) -> Iterator[tuple[T, V | None, Exception | None]]:
    """Yield (item, value, error) for each of `items` in order, where value = decode(item), or
    error is the exception it raised (value None). Decoding runs on `workers` threads; at most
    `depth` items (default 2 per worker) are alive at once: decoding, decoded and waiting, or
    held by the consumer. workers=0 decodes inline."""
    workers = default_workers() if workers is None else int(workers)
    if workers <= 0 or len(items) <= 1:
        for item in items:
            try:
                yield item, decode(item), None
            except Exception as e:  # handed to the caller, which decides: skip or fail
                yield item, None, e
        return
    depth = max(1, int(depth) if depth else 2 * workers)
    pending: deque[tuple[T, Future[V]]] = deque()
    it = iter(items)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="edgeport-decode") as pool:
        try:
            for item in it:
                pending.append((item, pool.submit(decode, item)))
                if len(pending) >= depth:
                    break
            while pending:
                item, future = pending.popleft()
                try:
                    value, error = future.result(), None
                except Exception as e:
                    value, error = None, e
                yield item, value, error
                # The consumer is done with that one: its slot goes to the next item.
                for nxt in it:
                    pending.append((nxt, pool.submit(decode, nxt)))
                    break
        finally:  # the consumer stopped early (an error, Ctrl-C): drop what is queued
            for _, future in pending:
                future.cancel()
