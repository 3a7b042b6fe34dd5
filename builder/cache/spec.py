"""`--cache-to` and `--cache-from` as buildx spells them.

    type=registry,ref=REF          a cache manifest in a registry (REF alone means this too,
                                   for --cache-from)
    type=local,dest=DIR            an OCI layout directory (--cache-to)
    type=local,src=DIR             the same, read (--cache-from)

plus `tag=TAG` for local caches (default `latest`: several caches may share a directory),
`compression=gzip|zstd` and `ignore-error=true|false` for --cache-to. pybuild always exports every
step of the build (buildx's `mode=max`); other buildx types and attributes are refused.

Beyond buildx, --cache-to takes `mounts=true` (export the build's RUN --mount=type=cache
directories too, builder/cache/mountblobs.py) and `mount-max=SIZE` (a larger mount is skipped,
default 1g); --cache-from restores exported mounts without being asked.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace

from builder.errors import UsageError
from builder.units import parse_size
from layers.compression import Compression
from layers.reference import Reference, parse_reference

_UNSUPPORTED_TYPES = ("inline", "gha", "s3", "azblob")
DEFAULT_MOUNT_MAX = 1 << 30


@dataclass(frozen=True)
class CacheSpec:
    """Where a cache is exported to or imported from: a registry reference, or a directory."""

    text: str
    ref: Reference | None = None
    directory: str | None = None
    tag: str = "latest"
    compression: Compression = Compression.GZIP
    ignore_error: bool = False
    mounts: bool = False
    mount_max: int = DEFAULT_MOUNT_MAX

    def describe(self) -> str:
        return self.ref.familiar() if self.ref else f"{self.directory} ({self.tag})"


def parse_cache_spec(text: str, option: str) -> CacheSpec:
    """Parse one `--cache-to` / `--cache-from` value. Raises UsageError naming the option."""
    def fail(problem: str) -> UsageError:
        return UsageError(f"{option} {text}: {problem}")

    if "=" not in text.split(",", 1)[0]:
        if option != "--cache-from":
            raise fail("expected type=registry,ref=REF or type=local,dest=DIR")
        text = f"type=registry,ref={text}"
    attrs: dict[str, str] = {}
    for part in text.split(","):
        name, equals, value = part.partition("=")
        if not equals or not value:
            raise fail(f"{part!r} is not KEY=VALUE")
        attrs[name.strip()] = value.strip()
    kind = attrs.pop("type", "")
    if kind in _UNSUPPORTED_TYPES:
        raise fail(f"type={kind} caches are not supported yet (registry and local are)")
    wanted = {"registry": {"ref"}, "local": {"dest" if option == "--cache-to" else "src"}}.get(kind)
    if wanted is None:
        raise fail("type must be registry or local")
    missing = wanted - set(attrs)
    if missing:
        raise fail(f"type={kind} needs {', '.join(sorted(missing))}=")
    allowed = wanted | ({"tag"} if kind == "local" else set())
    if option == "--cache-to":
        allowed |= {"compression", "ignore-error", "mode", "mounts", "mount-max"}
    unknown = set(attrs) - allowed
    if unknown:
        raise fail(f"unknown attribute {sorted(unknown)[0]}")
    if attrs.get("mode", "max") != "max":
        raise fail("only mode=max is supported (every step of the build is exported)")
    compression = attrs.get("compression", "gzip")
    if compression not in ("gzip", "zstd"):
        raise fail("compression must be gzip or zstd")
    ignore_error = attrs.get("ignore-error", "false")
    if ignore_error not in ("true", "false"):
        raise fail("ignore-error must be true or false")
    mounts = attrs.get("mounts", "false")
    if mounts not in ("true", "false"):
        raise fail("mounts must be true or false")
    try:
        mount_max = parse_size(attrs["mount-max"]) if "mount-max" in attrs else DEFAULT_MOUNT_MAX
    except ValueError as error:
        raise fail(f"mount-max: {error}") from None
    spec = CacheSpec(text, compression=Compression(compression), ignore_error=ignore_error == "true",
                     mounts=mounts == "true", mount_max=mount_max)
    if kind == "registry":
        try:
            ref = parse_reference(attrs["ref"])
        except ValueError as error:
            raise fail(str(error)) from None
        return replace(spec, ref=ref)
    return replace(spec, directory=os.path.abspath(attrs.get("dest") or attrs["src"]),
                   tag=attrs.get("tag", "latest"))
