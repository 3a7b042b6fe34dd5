"""`-o/--output` in `docker buildx build`'s syntax: `type=TYPE[,KEY=VALUE...]`, one CSV record
(a value holding a comma is quoted: `"name=a:1,b:1"`). The bare `-o PATH` (pybuild's image
tarball) is not a spec: the command line keeps it as it always was."""
from __future__ import annotations

import csv
from dataclasses import dataclass

from layers.compression import Compression

# The keys each type takes. `force-compression` is accepted because pybuild always writes the
# compression asked for (a layer pulled in another one is compressed again).
_IMAGE_KEYS = {"name", "compression", "oci-mediatypes", "rewrite-timestamp", "force-compression"}
_KEYS = {
    "docker": {"dest"} | _IMAGE_KEYS,
    "oci": {"dest"} | _IMAGE_KEYS,
    "tar": {"dest"},
    "local": {"dest"},
    "image": {"push"} | _IMAGE_KEYS,
    "registry": _IMAGE_KEYS,
}
_COMPRESSIONS = {"uncompressed": Compression.NONE, "gzip": Compression.GZIP,
                 "zstd": Compression.ZSTD}
_TRUE, _FALSE = ("true", "1", "t"), ("false", "0", "f")


@dataclass(frozen=True)
class OutputSpec:
    """One -o. `kind` is docker, oci, tar, local or image (`type=registry` is an image pushed);
    `dest` a file, `-` (stdout) or, for local, a directory; None for docker (then docker load)
    and image. `names` are name='s (none: the build's -t names); `compression` None means
    the build's (--compression)."""

    kind: str
    dest: str | None = None
    names: tuple[str, ...] = ()
    push: bool = False
    compression: Compression | None = None
    oci_mediatypes: bool | None = None
    rewrite_timestamp: bool = False
    text: str = ""

    @property
    def writes(self) -> bool:
        """Whether it writes a file, a directory or stdout (not docker load, not a push)."""
        return self.dest is not None


def is_spec(text: str) -> bool:
    """Whether an -o value is buildx's `type=...` form rather than pybuild's bare path."""
    return "=" in text and "/" not in text.partition("=")[0]


def parse_output(text: str) -> OutputSpec:
    """The spec an -o value gives; ValueError saying what is wrong, for a usage error."""
    try:
        fields = next(csv.reader([text]), [])
    except csv.Error as error:
        raise ValueError(f"-o {text}: {error}") from None
    pairs: dict[str, str] = {}
    for field in fields:
        key, has_value, value = field.partition("=")
        key = key.strip().lower()
        if not has_value:
            raise ValueError(f"-o {text}: {field!r} is not KEY=VALUE")
        if key in pairs:
            raise ValueError(f"-o {text}: {key}= given twice")
        pairs[key] = value.strip()
    kind = pairs.pop("type", None)
    if not kind:
        raise ValueError(f"-o {text}: type= is required (docker, oci, tar, local, image, "
                         "registry), or give a bare path for the image tarball")
    if kind not in _KEYS:
        raise ValueError(f"-o {text}: unknown output type {kind!r} (docker, oci, tar, local, "
                         "image, registry)")
    unknown = sorted(set(pairs) - _KEYS[kind])
    if unknown:
        raise ValueError(f"-o {text}: type={kind} does not take {', '.join(unknown)} (it takes "
                         f"{', '.join(sorted(_KEYS[kind]))})")
    return _spec(text, kind, pairs)


def _spec(text: str, kind: str, pairs: dict[str, str]) -> OutputSpec:
    dest = pairs.get("dest") or None
    if kind == "local" and (dest is None or dest == "-"):
        raise ValueError(f"-o {text}: type=local needs dest=DIRECTORY")
    if kind in ("oci", "tar") and dest is None:
        dest = "-"  # as buildx: stdout (refused when it is a terminal)
    names = tuple(name.strip() for name in pairs.get("name", "").split(",") if name.strip())
    push = kind == "registry" or _bool(text, pairs, "push", False)
    compression = None
    if "compression" in pairs:
        compression = _COMPRESSIONS.get(pairs["compression"])
        if compression is None:
            raise ValueError(f"-o {text}: compression={pairs['compression']} is not one of "
                             "uncompressed, gzip, zstd")
    oci = _bool(text, pairs, "oci-mediatypes", None)
    if oci is False and compression is Compression.ZSTD:
        raise ValueError(f"-o {text}: zstd layers need oci-mediatypes=true (Docker manifests "
                         "cannot list them)")
    _bool(text, pairs, "force-compression", False)
    return OutputSpec("image" if kind == "registry" else kind, dest, names, push, compression,
                      oci, bool(_bool(text, pairs, "rewrite-timestamp", False)), text)


def _bool(text: str, pairs: dict[str, str], key: str, default: bool | None) -> bool | None:
    if key not in pairs:
        return default
    value = pairs[key].lower()
    if value in _TRUE or value == "":
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"-o {text}: {key}={pairs[key]} is not true or false")
