"""The host's platform in OCI terms (`linux/amd64`, `linux/arm64/v8`): the one platform pybuild
builds for, so the one a multi-platform base image is resolved to."""
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
