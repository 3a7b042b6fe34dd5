"""One `Session` per registry host for the process, so tokens and kept-alive connections serve
every image of a build."""
from __future__ import annotations

import os
import threading
from collections.abc import Callable

from layers.reference import Reference
from layers.registry.credentials import credentials_for
from layers.registry.transport import DEFAULT_TIMEOUT, Session

_sessions: dict[tuple, Session] = {}
_lock = threading.Lock()


def session_for(ref: Reference, *, insecure_registries: frozenset[str] = frozenset(),
                config_dir: str | None = None,
                log: Callable[[str], None] | None = None,
                warn: Callable[[str], None] | None = None,
                timeout: float = DEFAULT_TIMEOUT) -> Session:
    """The session for `ref`'s registry, with the credentials config.json holds for it.
    `insecure_registries` lists hosts spoken to over plain http (localhost always is); `warn`
    hears each retry; a request and its retries take at most `timeout` seconds."""
    insecure = ref.registry in insecure_registries
    key = (ref.registry, insecure, config_dir or os.environ.get("DOCKER_CONFIG"), log, warn,
           timeout)
    with _lock:
        if key not in _sessions:
            _sessions[key] = Session(ref.registry, insecure=insecure, log=log, warn=warn,
                                     timeout=timeout,
                                     credentials=credentials_for(ref.registry, config_dir))
        return _sessions[key]
