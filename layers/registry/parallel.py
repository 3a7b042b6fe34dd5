"""Blob transfers a few at a time: registries and links are faster with several streams, and
a blob's hashing and (de)compression release the GIL."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


def run_all(function: Callable[[T], object], items: Iterable[T], workers: int) -> None:
    """Call `function` on every item, `workers` at a time. The first error is raised once the
    calls under way have ended; the calls not yet started are dropped."""
    items = list(items)
    if not items:
        return
    pool = ThreadPoolExecutor(min(workers, len(items)), thread_name_prefix="registry")
    try:
        for _ in pool.map(function, items):
            pass
    finally:
        pool.shutdown(cancel_futures=True)
