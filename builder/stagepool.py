"""The stages a target needs, built at the same time where none needs another, as BuildKit's
solver builds them: a stage starts once the stages it needs (builder/plan/graph.py) are built, at
most `workers` at once, each in a thread of its own. Threads are enough: a stage's time goes to
its RUNs' processes, to system calls, zlib and hashlib, which all release the GIL.

The first stage that fails stops the others (builder/cancel.py): their running RUNs are killed,
each stops before its next step, their open steps end as CANCELED, and once every thread has
stopped the failure is raised, as a build of one stage at a time raises it. Ctrl-C or SIGTERM,
which reach the waiting thread, stop them the same way before they propagate.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from builder.cancel import CURRENT, Canceled, Cancellation
from builder.progress.sinks import Log


def build_stages(needs: Mapping[int, frozenset[int]], build: Callable[[int], object],
                 workers: int, log: Log) -> None:
    """Build every stage of `needs` (stage -> the stages it needs, all among its keys) with
    `build(stage)`, each once the stages it needs are built; started in index order."""
    cancellation = Cancellation()

    def work(index: int) -> None:
        CURRENT.set(cancellation)
        try:
            build(index)
        except BaseException:
            if cancellation.canceled:
                for number in log.open_steps(threading.get_ident()):
                    log.canceled(number)
            raise

    pending = dict(needs)
    built: set[int] = set()
    running: dict[Future, int] = {}
    failure: BaseException | None = None
    with ThreadPoolExecutor(workers, thread_name_prefix="stage") as pool:
        try:
            while pending or running:
                for index in sorted(i for i in pending if pending[i] <= built):
                    if len(running) < workers:
                        del pending[index]
                        running[pool.submit(work, index)] = index
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    index = running.pop(future)
                    error = future.exception()
                    if error is None:
                        built.add(index)
                    elif not (cancellation.canceled or isinstance(error, Canceled)):
                        failure = error
                        cancellation.cancel()
                        pending.clear()
        except BaseException:  # Ctrl-C, SIGTERM: stop the stages, then go
            cancellation.cancel()
            wait(running)
            raise
    if failure is not None:
        raise failure
