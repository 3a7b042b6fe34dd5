"""Compiled code for the methods `dataclasses` generates, kept between runs like bytecode.

A build imports about 90 frozen dataclasses, and for each the dataclasses module writes the
source of __init__, __repr__, __eq__, __hash__, __setattr__ and __delattr__ and compiles it with
`exec`: a third of a no-op rebuild's imports (about 50 ms here), every run, for the same text.
`install` gives the dataclasses module an `exec` of its own (a module global, found before the
builtin; the module itself is untouched) that compiles each text once and keeps the code
object, marshalled, beside pybuild's bytecode (`__pycache__`, or under PYTHONPYCACHEPREFIX):
the same place and trust as the .pyc files Python already loads from there, written only when
Python writes bytecode. The text is the key, so a changed class compiles anew; the file is
named for the interpreter (`cpython-311`), whose marshal format it is in.
"""
from __future__ import annotations

import atexit
import builtins
import dataclasses
import importlib.util
import marshal
import os
import sys
from types import CodeType

_MOST = 4096  # texts kept; past this (years of changed classes) only those of this run are


def install() -> None:
    """Serve dataclasses' compilations from the file, and keep new ones at exit. Does nothing
    where the dataclasses module does not compile through `exec` (another Python)."""
    if not hasattr(dataclasses, "_create_fn") or "exec" in vars(dataclasses):
        return
    path = _path()
    codes = _load(path)
    used: set[str] = set()
    fresh: list[str] = []

    def compiled_exec(source: object, globals: dict | None = None,
                      locals: dict | None = None) -> None:
        if isinstance(source, str):
            used.add(source)
            code = codes.get(source)
            if code is None:
                code = codes[source] = compile(source, "<string>", "exec")
                fresh.append(source)
            source = code
        builtins.exec(source, globals, locals)

    def save() -> None:
        if fresh:
            _save(path, codes if len(codes) <= _MOST else {k: codes[k] for k in used})

    dataclasses.exec = compiled_exec  # type: ignore[attr-defined]
    if path is not None and not sys.dont_write_bytecode:
        atexit.register(save)


def _path() -> str | None:
    try:
        return os.path.join(os.path.dirname(importlib.util.cache_from_source(__file__)),
                            f"dataclass-code.{sys.implementation.cache_tag}.marshal")
    except (NotImplementedError, ValueError):
        return None


def _load(path: str | None) -> dict[str, CodeType]:
    """The kept code objects; none if the file is missing, unreadable or not one of ours."""
    if path is None:
        return {}
    try:
        with open(path, "rb") as handle:  # marshal.load(handle) reads in pieces: 10x slower
            codes = marshal.loads(handle.read())
    except (OSError, EOFError, ValueError, TypeError):
        return {}
    if not isinstance(codes, dict) or not all(
            isinstance(k, str) and isinstance(v, CodeType) for k, v in codes.items()):
        return {}
    return codes


def _save(path: str, codes: dict[str, CodeType]) -> None:
    """Write the file whole under a temp name and rename it: readers see the old one or the
    new one. Only a shortcut: a directory that cannot be written is left alone."""
    temp = f"{path}.{os.getpid()}"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(temp, "wb") as handle:
            marshal.dump(codes, handle)
        os.replace(temp, path)
    except OSError:
        try:
            os.unlink(temp)
        except OSError:
            pass
