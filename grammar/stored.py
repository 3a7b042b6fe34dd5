"""A parsed Dockerfile as bytes and back, for a cache of parses.

Importing lark, loading the parser and parsing cost a cached rebuild about 80 ms here, for a
Dockerfile that has not changed; so the builder keeps each parse under `key(text, file)`, which
also covers the parser's own code (every file of this package, lark's files, the Python version):
a changed parser never serves an old result. The bytes are marshal's: tuples, strings, numbers and dicts
only, loaded without running anything; instances are rebuilt only from the classes listed here.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.machinery
import marshal
import os
import sys
from typing import Any

from grammar import instructions as ins
from grammar.errors import Span

_FORMAT = 1
_CLASSES = {cls.__name__: cls for cls in (
    Span, ins.Heredoc, ins.Command, ins.KeyValue, ins.ArgDecl, ins.Directives, ins.Dockerfile,
    *ins.KEYWORD_OF)}
_FIELDS = {cls: tuple(f.name for f in dataclasses.fields(cls)) for cls in _CLASSES.values()}


def key(text: str, file: str) -> str | None:
    """What a parse of `text` (named `file` in spans and errors) is stored under; None when the
    parser's code cannot be read (then nothing is stored)."""
    fingerprint = _parser_fingerprint()
    if fingerprint is None:
        return None
    hasher = hashlib.sha256(fingerprint.encode())
    hasher.update(file.encode("utf-8", "surrogateescape") + b"\0")
    hasher.update(text.encode("utf-8", "surrogateescape"))
    return hasher.hexdigest()


def encode(dockerfile: ins.Dockerfile) -> bytes | None:
    """The bytes of a parse, or None if it holds something they cannot (then it is not kept)."""
    try:
        data = marshal.dumps(_encode(dockerfile), 2)
    except (TypeError, ValueError):
        return None
    return data if decode(data) == dockerfile else None


def decode(data: bytes) -> ins.Dockerfile:
    """A parse back from `encode`'s bytes. Raises ValueError if they are not such bytes."""
    try:
        dockerfile = _decode(marshal.loads(data))
    except (EOFError, TypeError, KeyError) as error:
        raise ValueError(f"not a stored parse: {error}") from None
    if not isinstance(dockerfile, ins.Dockerfile):
        raise ValueError("not a stored parse")
    return dockerfile


def _encode(value: Any) -> Any:
    if isinstance(value, tuple):
        return tuple(_encode(item) for item in value)
    fields = _FIELDS.get(type(value))
    if fields is not None:
        encoded = {name: _encode(getattr(value, name)) for name in fields}
        return {"": type(value).__name__, **encoded}
    if value is None or isinstance(value, (str, int)):  # bool is an int
        return value
    raise TypeError(f"cannot store {type(value).__name__}")


def _decode(value: Any) -> Any:
    if isinstance(value, tuple):
        return tuple(_decode(item) for item in value)
    if isinstance(value, dict):
        cls = _CLASSES[value[""]]
        return cls(**{name: _decode(value[name]) for name in _FIELDS[cls]})
    if value is None or isinstance(value, (str, int)):
        return value
    raise TypeError(f"unexpected {type(value).__name__}")


@functools.cache
def _parser_fingerprint() -> str | None:
    """The parser's code: this package's files, lark's package (its files' sizes and mtimes:
    a reinstall changes them), the Python version and this format. None if they cannot be read
    (an installation in a zip file, or lark found by another finder)."""
    spec = importlib.machinery.PathFinder.find_spec("lark")
    if spec is None or not spec.submodule_search_locations:
        return None
    hasher = hashlib.sha256(f"{_FORMAT} {sys.version_info[:3]}".encode())
    here = os.path.dirname(os.path.abspath(__file__))
    lark_dir = list(spec.submodule_search_locations)[0]
    try:
        for name in sorted(os.listdir(here)):
            if name.endswith((".py", ".lark")):
                with open(os.path.join(here, name), "rb") as handle:
                    hasher.update(name.encode() + b"\0" + handle.read() + b"\0")
        for name in sorted(os.listdir(lark_dir)):
            if name.endswith(".py"):
                st = os.stat(os.path.join(lark_dir, name))
                hasher.update(f"lark/{name} {st.st_size} {st.st_mtime_ns}\0".encode())
    except OSError:
        return None
    return hasher.hexdigest()
