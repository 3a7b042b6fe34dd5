"""`RUN --mount=...` text -> a typed mount, with BuildKit's defaults, checks and messages.

The text is parsed twice: at parse time, unexpanded, to reject a malformed mount with the
Dockerfile's line (values holding a `$` are checked only for their key then), and at build time
with the stage's ARG/ENV scope applied to every value but `type`, as BuildKit expands them.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from typing import Callable, Union

TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")
SHARING = ("shared", "private", "locked")
_BOOLS = {"1": True, "t": True, "true": True, "TRUE": True, "True": True, "T": True,
          "0": False, "f": False, "false": False, "FALSE": False, "False": False, "F": False}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgtp])?i?b?", re.IGNORECASE)
# The keys each type accepts (aliases are folded first).
_KEYS = {
    "bind": {"source", "target", "from", "readonly"},
    "cache": {"source", "target", "from", "readonly", "id", "sharing", "mode", "uid", "gid"},
    "tmpfs": {"target", "size"},
    "secret": {"source", "target", "id", "required", "mode", "uid", "gid", "env"},
    "ssh": {"target", "id", "required", "mode", "uid", "gid"},
}
_KNOWN = set().union(*_KEYS.values())
_TEXT = ("source", "target", "from", "id", "env")
_ALIASES = {"src": "source", "dst": "target", "destination": "target", "ro": "readonly",
            "readwrite": "rw"}


class MountError(ValueError):
    """A malformed mount; the message is BuildKit's where it has one."""


@dataclass(frozen=True)
class BindMount:
    target: str
    source: str = "/"
    from_: str | None = None  # a stage, an image or a named build context; None: the context
    readonly: bool = True     # `rw` lets the command write; its writes are thrown away


@dataclass(frozen=True)
class CacheMount:
    target: str
    id: str               # defaults to the target
    sharing: str = "shared"
    readonly: bool = False
    mode: int = 0o755
    uid: int = 0
    gid: int = 0
    from_: str | None = None  # seed an empty cache from this stage (or image) ...
    source: str = "/"         # ... at this path


@dataclass(frozen=True)
class TmpfsMount:
    target: str
    size: int | None = None  # bytes; None: the kernel's default (half of RAM)


@dataclass(frozen=True)
class SecretMount:
    id: str
    target: str | None    # None with `env`: the secret is only an environment variable
    required: bool = False
    mode: int = 0o400
    uid: int = 0
    gid: int = 0
    env: str | None = None


@dataclass(frozen=True)
class SshMount:
    id: str = "default"
    target: str | None = None  # None: /run/buildkit/ssh_agent.N, N the ssh mount's number
    required: bool = False
    mode: int = 0o600
    uid: int = 0
    gid: int = 0


Mount = Union[BindMount, CacheMount, TmpfsMount, SecretMount, SshMount]


def parse_mount(text: str, expand: Callable[[str], str] | None = None) -> Mount:
    """One `--mount` value. Without `expand` (parse time) values holding `$` are not checked."""
    fields = _fields(text)
    kind = "bind"
    for key, value in fields:
        if key == "type":
            if value is None:
                raise MountError("invalid field 'type' must be a key=value pair")
            kind = value.lower()
            if kind not in TYPES:
                raise MountError(f"unsupported mount type \"{value}\"")
    values: dict[str, object] = {}
    for key, value in fields:
        if key == "type":
            continue
        if key in ("readonly", "rw", "required") and value is None:
            value = "true"
        if value is None:
            raise MountError(f"invalid field '{key}' must be a key=value pair")
        if expand is not None:
            value = expand(value)
        name = "readonly" if key == "rw" else key
        if name not in _KEYS[kind]:
            if name in _KNOWN:
                raise MountError(f"unexpected key '{key}' for mount type '{kind}'")
            raise MountError(f"unexpected key '{key}' in '{text}'")
        if expand is None and "$" in value and name not in _TEXT:
            continue  # checked once expanded
        values[name] = _value(key, value)
    return _build(kind, {k: v for k, v in values.items() if v is not None}, text)


def _fields(text: str) -> list[tuple[str, str | None]]:
    """The comma-separated fields (CSV, so a value may be quoted), keys folded to one name."""
    try:
        rows = list(csv.reader([text]))
    except csv.Error as error:
        raise MountError(f"invalid mount {text!r}: {error}") from None
    fields = []
    for field in rows[0] if rows else []:
        if not field.strip():
            continue  # `type=cache,` (a continuation after the comma) ends with an empty field
        key, has_value, value = field.partition("=")
        key = key.strip().lower()
        if not key:
            raise MountError(f"invalid field '{field}' must be a key=value pair")
        fields.append((_ALIASES.get(key, key), value if has_value else None))
    return fields


def _value(key: str, value: str) -> object:
    if key in ("readonly", "rw", "required"):
        if value not in _BOOLS:
            raise MountError(f"invalid value for {key}: {value}")
        return _BOOLS[value] if key != "rw" else not _BOOLS[value]
    if key == "sharing":
        if value not in SHARING:
            raise MountError(f"unsupported sharing value \"{value}\"")
        return value
    if key in ("mode", "uid", "gid"):
        try:
            number = int(value, 8 if key == "mode" else 10)
        except ValueError:
            number = -1
        if not 0 <= number < 2**32:
            raise MountError(f"invalid value {value} for {key}")
        return number
    if key == "size":
        match = _SIZE.fullmatch(value.strip())
        if match is None:
            raise MountError(f"invalid value {value} for size")
        number, prefix = match.groups()
        return int(float(number) * 1024 ** (" kmgtp".index(prefix.lower()) if prefix else 0))
    return value


def _build(kind: str, values: dict, text: str) -> Mount:
    target = values.get("target")
    if kind == "secret":
        ident = values.get("id") or (target.rstrip("/").rsplit("/", 1)[-1] if target else None)
        if not ident:
            raise MountError("secret mount requires an id or a target")
        if target is None and values.get("env") is None:
            target = f"/run/secrets/{ident}"
        return SecretMount(ident, target, values.get("required", False), values.get("mode", 0o400),
                           values.get("uid", 0), values.get("gid", 0), values.get("env"))
    if kind == "ssh":
        return SshMount(values.get("id") or "default", target, values.get("required", False),
                        values.get("mode", 0o600), values.get("uid", 0), values.get("gid", 0))
    if not target:
        raise MountError(f"mount type {kind} needs a target")
    if kind == "tmpfs":
        return TmpfsMount(target, values.get("size"))
    if kind == "cache":
        return CacheMount(target, values.get("id") or target, values.get("sharing", "shared"),
                          values.get("readonly", False), values.get("mode", 0o755),
                          values.get("uid", 0), values.get("gid", 0), values.get("from"),
                          values.get("source", "/"))
    return BindMount(target, values.get("source", "/"), values.get("from"),
                     values.get("readonly", True))
