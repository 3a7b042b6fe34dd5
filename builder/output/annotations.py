"""`--annotation` in buildx's syntax: `[TYPE[,TYPE...][PLATFORM]:]KEY=VALUE`, TYPE one of
`manifest` (the default), `index`, `manifest-descriptor`; `index-descriptor` is refused, since
pybuild writes no index of indexes. A PLATFORM must be the one pybuild builds for; a
multi-platform build takes none."""
from __future__ import annotations

import re

from layers.image import Annotations
from layers.platform import Platform

_PREFIX = re.compile(r"(?P<types>[a-z,-]+)(?:\[(?P<platform>[^\]]*)\])?")
_TYPES = ("manifest", "manifest-descriptor", "index")


def parse_annotations(values: list[str], target: Platform | None) -> Annotations:
    """The annotations of the `values`, by where they go (a later value of a key wins), for a
    build of `target` (None: of several platforms); ValueError saying what is wrong."""
    found: dict[str, dict[str, str]] = {kind: {} for kind in _TYPES}
    for text in values:
        head, separator, value = text.partition("=")
        types, _, key = head.partition(":") if ":" in head else ("", "", head)
        if not separator or not key:
            raise ValueError(f"--annotation {text}: not [TYPE:]KEY=VALUE")
        for kind in _kinds(text, types, target):
            found[kind][key] = value
    return Annotations(*(tuple(found[kind].items()) for kind in _TYPES))


def _kinds(text: str, prefix: str, target: Platform | None) -> list[str]:
    if not prefix:
        return ["manifest"]
    match = _PREFIX.fullmatch(prefix)
    kinds = match["types"].split(",") if match else []
    unknown = [kind for kind in kinds if kind not in _TYPES]
    if not match or unknown:
        raise ValueError(f"--annotation {text}: the type must be manifest, index or "
                         "manifest-descriptor" + (" (pybuild writes no index of indexes)"
                                                  if "index-descriptor" in unknown else ""))
    platform = match["platform"]
    if platform and target is None:
        raise ValueError(f"--annotation {text}: a multi-platform build takes no annotation "
                         "for one platform")
    if platform and platform.split("/")[:2] != [target.os, target.architecture]:
        raise ValueError(f"--annotation {text}: pybuild builds only for {target}, not {platform}")
    return kinds
