"""Image references with Docker's defaults: `alpine` is `docker.io/library/alpine:latest`."""
from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_REGISTRY = "docker.io"
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class Reference:
    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    def familiar(self) -> str:
        """The short form Docker shows: `alpine:3`, `myorg/app:1`, `localhost:5000/app:1`."""
        name = self.repository
        if self.registry == DEFAULT_REGISTRY:
            name = name.removeprefix("library/")
        else:
            name = f"{self.registry}/{name}"
        return name + self._suffix()

    def full(self) -> str:
        """The fully qualified form containerd stores: `docker.io/library/alpine:3`."""
        return f"{self.registry}/{self.repository}" + self._suffix()

    def familiar_name(self) -> str:
        return Reference(self.registry, self.repository).familiar()

    def _suffix(self) -> str:
        return (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")


def parse_reference(text: str, default_tag: str | None = "latest") -> Reference:
    """Parse and normalise; raises ValueError naming what is wrong."""
    rest, _, digest = text.partition("@")
    if digest and not _DIGEST.fullmatch(digest):
        raise ValueError(f"invalid reference {text!r}: bad digest {digest!r}")
    name, tag = rest, None
    colon = rest.rfind(":")
    if colon > rest.rfind("/"):
        name, tag = rest[:colon], rest[colon + 1:]
        if not _TAG.fullmatch(tag):
            raise ValueError(f"invalid reference {text!r}: bad tag {tag!r}")
    first, slash, remainder = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        registry, repository = first, remainder
    else:
        registry, repository = DEFAULT_REGISTRY, name
    if registry == "index.docker.io":
        registry = DEFAULT_REGISTRY
    if registry == DEFAULT_REGISTRY and "/" not in repository:
        repository = "library/" + repository
    if not _REPOSITORY.fullmatch(repository):
        raise ValueError(f"invalid reference {text!r}: repository names are lowercase letters, "
                         "digits and separators (. _ __ -)")
    if tag is None and not digest:
        tag = default_tag
    return Reference(registry, repository, tag, digest or None)
