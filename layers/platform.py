"""Platforms in OCI terms (`linux/amd64`, `linux/arm64/v8`): the host's (BuildKit's BUILDPLATFORM)
and the ones `--platform` names (TARGETPLATFORM), to which a multi-platform base image is
resolved."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

# Kernel machine names (uname -m) to OCI architecture and variant names (image-spec config.md).
_ARCHITECTURES = {"x86_64": ("amd64", ""), "aarch64": ("arm64", "v8"), "armv7l": ("arm", "v7"),
                  "armv6l": ("arm", "v6"), "i686": ("386", ""), "ppc64le": ("ppc64le", ""),
                  "s390x": ("s390x", ""), "riscv64": ("riscv64", "")}


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        return "/".join(part for part in (self.os, self.architecture, self.variant) if part)

    def matches(self, data: dict[str, Any]) -> bool:
        """Whether a descriptor's `platform` object names this platform. A missing variant
        matches any; arm64 without a variant is v8, as containerd's matcher treats it."""
        if data.get("os") != self.os or data.get("architecture") != self.architecture:
            return False
        variant = data.get("variant") or ""
        if self.architecture == "arm64":
            variant = variant or "v8"
        return not variant or not self.variant or variant == self.variant


def host_platform() -> Platform:
    machine = os.uname().machine
    architecture, variant = _ARCHITECTURES.get(machine, (machine, ""))
    return Platform("linux", architecture, variant)


# Variants an architecture has when none is named, and the ones that are no variant at all, as
# containerd's platforms.Normalize has them (so `linux/arm64/v8` is `linux/arm64`).
_DEFAULT_VARIANT = {"arm": "v7"}
_NO_VARIANT = {("arm64", "v8"), ("amd64", "v1")}
# Names Docker accepts for an architecture besides the OCI one.
_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "armhf": "arm",
            "armel": "arm", "i386": "386"}


def parse_platform(text: str) -> Platform:
    """`os/arch[/variant]` normalised; raises ValueError naming the text when malformed."""
    parts = text.strip().lower().split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"{text!r} is not a platform (os/arch[/variant], e.g. linux/arm64)")
    system, arch = parts[0], _ALIASES.get(parts[1], parts[1])
    variant = parts[2] if len(parts) == 3 else _DEFAULT_VARIANT.get(arch, "")
    if (arch, variant) in _NO_VARIANT:
        variant = ""
    return Platform(system, arch, variant)


def build_args(target: Platform, build: Platform) -> dict[str, str]:
    """The automatic platform ARGs, as BuildKit sets them: TARGET* for the platform built for,
    BUILD* for the host's, each variant empty where the platform has none."""
    values: dict[str, str] = {}
    for prefix, platform in (("TARGET", target), ("BUILD", build)):
        platform = parse_platform(str(platform))
        values |= {f"{prefix}PLATFORM": str(platform), f"{prefix}OS": platform.os,
                   f"{prefix}ARCH": platform.architecture, f"{prefix}VARIANT": platform.variant}
    return values
