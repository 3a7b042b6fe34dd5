"""The rpm database of Fedora 33+, RHEL/UBI 9 and their kin: `var/lib/rpm/rpmdb.sqlite`, whose
`Packages` table holds each package's rpm header. Read from bytes (sqlite's deserialize), so
nothing of the image touches the disk; a header is parsed with bounds checked, since the image
may be hostile. The Berkeley DB databases of older releases are not read."""
from __future__ import annotations

import sqlite3
import struct
from collections.abc import Iterator
from dataclasses import dataclass

_NAME, _VERSION, _RELEASE, _EPOCH, _LICENSE, _ARCH = 1000, 1001, 1002, 1003, 1014, 1022
_INT32, _STRING = 4, 6


@dataclass(frozen=True)
class RpmHeader:
    name: str
    version: str  # VERSION-RELEASE
    epoch: int | None
    arch: str
    license: str


def rpm_headers(database: bytes) -> Iterator[RpmHeader]:
    """The packages of an rpmdb.sqlite's bytes; nothing for a file that is not one."""
    connection = sqlite3.connect(":memory:")
    try:
        connection.deserialize(database)
        rows = connection.execute("SELECT blob FROM Packages").fetchall()
    except sqlite3.Error:
        return
    finally:
        connection.close()
    for (blob,) in rows:
        if isinstance(blob, bytes) and (header := _parse(blob)) is not None:
            yield header


def _parse(blob: bytes) -> RpmHeader | None:
    """A header as rpm stores it in the database: entry count, data length, 16-byte entries
    (tag, type, offset, count, big-endian), then the data."""
    if len(blob) < 8:
        return None
    count, length = struct.unpack_from(">ii", blob)
    start = 8 + 16 * count
    if count < 0 or length < 0 or start + length > len(blob):
        return None
    data = blob[start:start + length]
    tags: dict[int, str | int] = {}
    for index in range(count):
        tag, kind, offset, _ = struct.unpack_from(">iiii", blob, 8 + 16 * index)
        if not 0 <= offset < len(data):
            continue
        if kind == _STRING:
            end = data.find(b"\0", offset)
            tags[tag] = data[offset:end if end >= 0 else len(data)].decode("utf-8", "replace")
        elif kind == _INT32 and offset + 4 <= len(data):
            tags[tag] = struct.unpack_from(">i", data, offset)[0]
    name, version, release = tags.get(_NAME), tags.get(_VERSION), tags.get(_RELEASE)
    if not all(isinstance(value, str) and value for value in (name, version, release)):
        return None
    epoch = tags.get(_EPOCH)
    return RpmHeader(str(name), f"{version}-{release}", epoch if isinstance(epoch, int) else None,
                     str(tags.get(_ARCH, "")), str(tags.get(_LICENSE, "")))
