"""Items handed from one thread to a consumer running on a thread of its own."""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Handoff(Generic[T]):
    """Items handed to `consume(items)` on a thread of its own, through a queue of at most `bound`
    items (0: unbounded), so that a producer of large items waits for a slow consumer rather than
    hold them all in memory. `failure` is what `consume` raised; the items after it are taken
    unread, so the producer never blocks."""

    def __init__(self, consume: Callable[[Iterator[T]], None], name: str, bound: int = 0) -> None:
        self._items: queue.Queue[T | None] = queue.Queue(bound)
        self.failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(consume,), name=name,
                                        daemon=True)
        self._thread.start()

    def put(self, item: T) -> None:
        self._items.put(item)

    def close(self) -> None:
        """Wait until every item put is consumed."""
        self._items.put(None)
        self._thread.join()

    def _run(self, consume: Callable[[Iterator[T]], None]) -> None:
        items = iter(self._items.get, None)
        try:
            consume(items)
        except BaseException as error:  # noqa: BLE001 - the producer's thread decides
            self.failure = error
            for _ in items:
                continue
