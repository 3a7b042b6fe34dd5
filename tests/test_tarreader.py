"""layers.tarreader: reads what tarfile writes in every format, the same way tarfile reads it, and
refuses what is malformed or truncated."""
from __future__ import annotations

import io
import os
import tarfile
import tempfile

import pytest

from layers.errors import LayerError
from layers.tarreader import TarReader


LONG = "dir" * 30 + "/" + "long" * 20  # beyond 100 bytes: ustar's prefix, or a long name


def archive(fmt: int) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        def add(name, kind=tarfile.REGTYPE, body=b"", **attributes):
            info = tarfile.TarInfo(name)
            info.type, info.size = kind, len(body)
            for key, value in attributes.items():
                setattr(info, key, value)
            tar.addfile(info, io.BytesIO(body))
        add("d", tarfile.DIRTYPE, mode=0o1777, mtime=1_700_000_000)
        add(LONG, body=os.urandom(70_000), uid=4_000, gid=5, mode=0o4755)
        add("s", tarfile.SYMTYPE, linkname="t" * 150 if fmt != tarfile.USTAR_FORMAT else "t")
        add("h", tarfile.LNKTYPE, linkname=LONG if fmt != tarfile.USTAR_FORMAT else "e")
        add("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3)
        add("p", tarfile.FIFOTYPE)
        add("e", body=b"")
        add("prefix/" + "n" * 90 + "/" + "m" * 90, body=b"x")
    return out.getvalue()


def by_tarfile(data: bytes) -> list[tuple]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return [(m.name, m.mode, m.uid, m.gid, m.size, int(m.mtime) * 10**9, m.linkname,
                 m.devmajor if m.ischr() else 0, tar.extractfile(m).read() if m.isreg() else b"")
                for m in tar]


def by_reader(data: bytes) -> list[tuple]:
    found = []
    reader = TarReader(io.BytesIO(data))
    for e in reader:
        body = b""
        if e.kind == b"0":
            with tempfile.TemporaryFile() as out:
                reader.write_body(out.fileno())
                out.seek(0)
                body = out.read()
        found.append((e.name, e.mode, e.uid, e.gid, e.size, e.mtime_ns, e.linkname, e.devmajor,
                      body))
    return found


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT],
                         ids=["ustar", "gnu", "pax"])
def test_reads_what_tarfile_reads(fmt):
    data = archive(fmt)
    assert by_reader(data) == by_tarfile(data)


def one_entry(fmt: int, name: str, **attributes) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt, errors="surrogateescape") as tar:
        info = tarfile.TarInfo(name)
        for key, value in attributes.items():
            setattr(info, key, value)
        tar.addfile(info)
    return out.getvalue()


def test_pax_times_xattrs_and_base256_numbers():
    big = one_entry(tarfile.GNU_FORMAT, "big", uid=9_000_000_000)  # beyond 7 octal digits
    assert next(iter(TarReader(io.BytesIO(big)))).uid == 9_000_000_000
    pax = one_entry(tarfile.PAX_FORMAT, "x", mtime=12.5,
                    pax_headers={"SCHILY.xattr.security.capability": "\udcff\udcfe"})
    entry = next(iter(TarReader(io.BytesIO(pax))))
    assert entry.mtime_ns == 12_500_000_000
    assert entry.xattrs == (("security.capability", b"\xff\xfe"),)


def header(**fields: bytes) -> bytearray:
    block = bytearray(tarfile.TarInfo("f").tobuf(tarfile.USTAR_FORMAT))
    for offset, value in fields.items():
        start = int(offset[1:])
        block[start:start + len(value)] = value
    return block


BROKEN = [
    pytest.param(b"\x01" * 1024, "checksum", id="garbage"),
    pytest.param(bytes(header(o148=b"0000000\0")), "checksum does not match", id="bad-checksum"),
    pytest.param(archive(tarfile.PAX_FORMAT)[:70_000], "ends inside", id="truncated-body"),
    pytest.param(archive(tarfile.PAX_FORMAT)[:700], "ends inside", id="truncated-header"),
]


@pytest.mark.parametrize("data, message", BROKEN)
def test_malformed_input_is_a_layer_error(data, message):
    with pytest.raises(LayerError, match=f"not a valid layer tar: .*{message}"):
        for entry in TarReader(io.BytesIO(data)):
            pass


def summed(block: bytearray) -> bytes:
    """`block` with its checksum recomputed (six digits, NUL, space)."""
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


# The numeric fields as tars other than Go's and GNU's write them: each header is read into the
# same numbers (mode 0o644, uid 1000, gid 100, size 0, mtime 1,700,000,000 s) as the usual form.
NUMBER_FORMS = [
    pytest.param({}, id="usual"),
    pytest.param({"o100": b"   644 \0"}, id="space-padded"),
    pytest.param({"o136": b"14524770400 "}, id="space-terminated"),
    pytest.param({"o108": b"\x80" + (1000).to_bytes(7, "big")}, id="base-256"),
    pytest.param({"o116": b"144\0\0\0\0\0"}, id="nul-padded"),
    pytest.param({"checksum": b"%07o\0"}, id="checksum-without-space"),
]


@pytest.mark.parametrize("fields", NUMBER_FORMS)
def test_every_form_of_a_number_reads_the_same(fields):
    block = header(o100=b"0000644\0", o108=b"0001750\0", o116=b"0000144\0",
                   o136=b"14524770400\0")
    for offset, value in fields.items():
        if offset != "checksum":
            block[int(offset[1:]):int(offset[1:]) + len(value)] = value
    data = summed(block)
    if "checksum" in fields:
        block[148:156] = b" " * 8
        data = bytes(block[:148]) + fields["checksum"] % sum(block) + bytes(block[156:])
    entry = next(iter(TarReader(io.BytesIO(data + bytes(1024)))))
    assert (entry.mode, entry.uid, entry.gid, entry.size, entry.mtime_ns) == \
        (0o644, 1000, 100, 0, 1_700_000_000 * 10**9)


def test_a_number_with_a_wrong_digit_is_refused():
    data = summed(header(o108=b"00017x0\0"))
    with pytest.raises(LayerError, match="is not a number"):
        list(TarReader(io.BytesIO(data + bytes(1024))))


def test_sparse_files_are_refused():
    with pytest.raises(LayerError, match="sparse files are not supported"):
        list(TarReader(io.BytesIO(summed(header(o156=b"S")) + bytes(1024))))


def test_an_archive_without_end_blocks_ends_at_its_last_entry():
    data = archive(tarfile.USTAR_FORMAT)
    assert len(list(TarReader(io.BytesIO(data.rstrip(b"\0") + bytes(-len(data.rstrip(b"\0"))
                                                                     % 512))))) == 8
