"""Layer tars chosen by a fuzzer's bytes: the entries that make extraction hard, written with
`tarfile` so their headers are valid and the fuzzer's effort goes into what the entries say."""
from __future__ import annotations

import io
import tarfile

_NAMES = ["a", "b", "d", "l", "..", ".", "", ".wh.a", ".wh.d", ".wh.l", ".wh..wh..opq", ".wh.",
          "outside", "dir", "file", "x" * 120, "é", "\udcff", "a\0b"]
_TYPES = [tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.LNKTYPE, tarfile.SYMTYPE, tarfile.CHRTYPE,
          tarfile.BLKTYPE, tarfile.DIRTYPE, tarfile.FIFOTYPE, tarfile.CONTTYPE, b"Z"]
_IDS = [0, 1, 1000, 65534, (1 << 21) - 1, (1 << 32) + 5]
_TIMES = [0, 1.5, -1, 1 << 33, 1e19]
_XATTRS = ["user.x", "trusted.overlay.opaque", "user.overlay.opaque", "security.capability",
           "trusted.x", "", "user.\udcff"]


def layers_from(provider, outside: str) -> tuple[bytes, bytes, str]:
    """Two layer tars (lower, upper) and the whiteout mode; `outside` is a directory beside the
    root that link targets may aim at."""
    targets = ["a", "d/a", "../outside/file", "..", "/", "/etc/passwd", outside,
               outside + "/dir", "l", "l/file", "../../..", "d/../../outside", "", "d"]
    whiteouts = "overlay" if provider.ConsumeBool() else "apply"
    return _layer(provider, targets), _layer(provider, targets), whiteouts


def _layer(provider, targets: list[str]) -> bytes:
    if provider.ConsumeIntInRange(0, 15) == 0:  # now and then, bytes that are no tar at all
        return provider.ConsumeBytes(provider.ConsumeIntInRange(0, 1024))
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT,
                      encoding="utf-8", errors="surrogateescape") as tar:
        for _ in range(provider.ConsumeIntInRange(0, 8)):
            _add(tar, provider, targets)
    data = out.getvalue()
    if provider.ConsumeIntInRange(0, 7) == 0:
        data = data[:provider.ConsumeIntInRange(0, len(data))]
    return data


def _add(tar: tarfile.TarFile, provider, targets: list[str]) -> None:
    parts = [provider.PickValueInList(_NAMES) for _ in range(provider.ConsumeIntInRange(1, 4))]
    info = tarfile.TarInfo(("/" if provider.ConsumeIntInRange(0, 5) == 0 else "") + "/".join(parts))
    info.type = provider.PickValueInList(_TYPES)
    info.mode = provider.ConsumeIntInRange(0, 0o177777)
    info.uid, info.gid = provider.PickValueInList(_IDS), provider.PickValueInList(_IDS)
    info.mtime = provider.PickValueInList(_TIMES)
    info.linkname = provider.PickValueInList(targets)
    info.devmajor = provider.ConsumeIntInRange(0, 1 << 12)
    info.devminor = provider.ConsumeIntInRange(0, 1 << 20)
    for _ in range(provider.ConsumeIntInRange(0, 2)):
        info.pax_headers["SCHILY.xattr." + provider.PickValueInList(_XATTRS)] = \
            provider.ConsumeBytes(4).decode("latin-1")
    content = provider.ConsumeBytes(provider.ConsumeIntInRange(0, 64))
    info.size = len(content) if info.type in (tarfile.REGTYPE, tarfile.AREGTYPE,
                                              tarfile.CONTTYPE) else 0
    try:
        tar.addfile(info, io.BytesIO(content) if info.size else None)
    except (ValueError, OverflowError, UnicodeError, tarfile.TarError):
        pass  # a header tarfile cannot write: not an input for the reader
