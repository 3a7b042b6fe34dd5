"""layers.tarwriter: what it writes must read back exactly, through Python's tarfile and GNU tar."""
from __future__ import annotations

import hashlib
import io
import os
import socket
import stat
import subprocess
import tarfile

import pytest

from layers import tarwriter
from layers.errors import LayerError
from layers.tarwriter import (
    CHUNK,
    Entry,
    Kind,
    LayerDigest,
    STAGE,
    LayerWriter,
    entry_from_stat,
    read_xattrs,
)

CAPABILITY = bytes.fromhex("0100000200300000000000000000000000000000")  # cap_net_raw+ep-ish
BINARY_XATTR = bytes([0x01, 0x00, 0x00, 0x02, 0xFF, 0x80, 0xC3, 0x28])  # not valid UTF-8


def write(*items: tuple[Entry, object], **options) -> tuple[bytes, LayerDigest]:
    out = io.BytesIO()
    writer = LayerWriter(out, **options)
    for entry, source in items:
        writer.add(entry, source)
    digest = writer.finish()
    return out.getvalue(), digest


def members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getmembers()


def contents(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isreg()}


def pax_records(data: bytes) -> list[bytes]:
    """The raw bodies of every PAX ('x') header in the tar."""
    found, offset = [], 0
    while offset + 512 <= len(data) and data[offset:offset + 512] != bytes(512):
        header = data[offset:offset + 512]
        size = int(header[124:136].rstrip(b"\0 ") or b"0", 8)
        body = data[offset + 512:offset + 512 + size]
        if header[156:157] == b"x":
            found.append(body)
        offset += 512 + (size + 511) // 512 * 512
    return found


def test_every_kind_round_trips(tmp_path):
    host_file = tmp_path / "host"
    host_file.write_bytes(b"from a host path")
    data, digest = write(
        (Entry("bin", Kind.DIR, 0o755, 1, 2, 1_700_000_000), None),
        (Entry("bin/tool", Kind.FILE, 0o4755, 3, 4, 1_700_000_001, 16), str(host_file)),
        (Entry("bin/bytes", Kind.FILE, 0o644, size=5), b"bytes"),
        (Entry("bin/stream", Kind.FILE, 0o600, size=6), io.BytesIO(b"stream")),
        (Entry("bin/empty", Kind.FILE, 0o644), None),
        (Entry("bin/tool2", Kind.HARDLINK, 0o4755, 3, 4, 1_700_000_001, linkname="bin/tool"), None),
        (Entry("bin/sh", Kind.SYMLINK, 0o777, mtime=5, linkname="/bin/busybox"), None),
        (Entry("dev/null", Kind.CHAR, 0o666, devmajor=1, devminor=3), None),
        (Entry("dev/sda", Kind.BLOCK, 0o660, devmajor=8, devminor=0), None),
        (Entry("run/fifo", Kind.FIFO, 0o1777), None),
    )
    got = {m.name: m for m in members(data)}
    assert list(got) == ["bin", "bin/tool", "bin/bytes", "bin/stream", "bin/empty", "bin/tool2",
                         "bin/sh", "dev/null", "dev/sda", "run/fifo"]
    assert (got["bin"].type, got["bin"].mode, got["bin"].uid, got["bin"].gid,
            got["bin"].mtime) == (tarfile.DIRTYPE, 0o755, 1, 2, 1_700_000_000)
    tool = got["bin/tool"]
    assert (tool.type, tool.mode, tool.uid, tool.gid, tool.size) == (
        tarfile.REGTYPE, 0o4755, 3, 4, 16)
    link = got["bin/tool2"]
    assert (link.type, link.linkname, link.mode, link.uid, link.mtime, link.size) == (
        tarfile.LNKTYPE, "bin/tool", 0o4755, 3, 1_700_000_001, 0)
    assert (got["bin/sh"].type, got["bin/sh"].linkname) == (tarfile.SYMTYPE, "/bin/busybox")
    assert (got["dev/null"].type, got["dev/null"].devmajor, got["dev/null"].devminor) == (
        tarfile.CHRTYPE, 1, 3)
    assert (got["dev/sda"].type, got["dev/sda"].devmajor) == (tarfile.BLKTYPE, 8)
    assert (got["run/fifo"].type, got["run/fifo"].mode) == (tarfile.FIFOTYPE, 0o1777)
    assert contents(data) == {"bin/tool": b"from a host path", "bin/bytes": b"bytes",
                              "bin/stream": b"stream", "bin/empty": b""}
    assert all(m.uname == "" and m.gname == "" for m in got.values())
    assert digest == LayerDigest("sha256:" + hashlib.sha256(data).hexdigest(), len(data))
    assert len(data) % 512 == 0 and data.endswith(bytes(1024))


def test_directories_carry_a_trailing_slash_and_plain_entries_no_pax():
    data, _ = write((Entry("usr/lib", Kind.DIR, 0o755), None))
    assert data[:8] == b"usr/lib/"
    assert pax_records(data) == []


def test_long_names_use_the_ustar_prefix_when_it_fits_and_pax_otherwise():
    split = "d" * 120 + "/" + "f" * 90           # 211 bytes, splits into prefix + name
    unsplittable = "x" * 120 + "/" + "y" * 130   # the last part alone exceeds 100 bytes
    very_long = "/".join(["component" * 5] * 8)  # 367 bytes
    long_dir = "e" * 150 + "/" + "g" * 99        # 250 bytes + the trailing slash
    data, _ = write(
        (Entry(split, Kind.FILE, 0o644), None),
        (Entry(unsplittable, Kind.FILE, 0o644), None),
        (Entry(very_long, Kind.FILE, 0o644), None),
        (Entry(long_dir, Kind.DIR, 0o755), None),
        (Entry("l", Kind.SYMLINK, 0o777, linkname="t" * 300), None),
    )
    assert [m.name for m in members(data)] == [split, unsplittable, very_long, long_dir, "l"]
    assert members(data)[4].linkname == "t" * 300
    records = pax_records(data)
    assert not any(split.encode() in r for r in records)  # written with the prefix field
    assert any(b" path=" + unsplittable.encode() + b"\n" in r for r in records)
    assert any(b" path=" + very_long.encode() + b"\n" in r for r in records)
    assert any(b" linkpath=" + b"t" * 300 + b"\n" in r for r in records)


def test_unicode_and_non_utf8_names():
    unicode_name = "usr/share/doc/naïve-café/日本語.txt"
    raw_name = os.fsdecode(b"opt/latin1-\xe9t\xe9")  # not UTF-8: kept byte for byte
    data, _ = write((Entry(unicode_name, Kind.FILE, 0o644), None),
                    (Entry(raw_name, Kind.SYMLINK, 0o777, linkname=unicode_name), None))
    got = members(data)
    assert [m.name for m in got] == [unicode_name, raw_name]
    assert got[1].linkname == unicode_name
    records = pax_records(data)
    assert b"hdrcharset=BINARY" not in records[0]
    assert records[1].startswith(b"21 hdrcharset=BINARY\n")
    assert b"path=opt/latin1-\xe9t\xe9\n" in records[1]


def test_ids_beyond_the_octal_fields_go_to_pax():
    data, _ = write((Entry("f", Kind.FILE, 0o644, uid=100_000_000, gid=2_097_152), None),
                    (Entry("g", Kind.FILE, 0o644, uid=2_097_151, gid=0), None))
    first, second = members(data)
    assert (first.uid, first.gid, second.uid) == (100_000_000, 2_097_152, 2_097_151)
    assert pax_records(data) == [b"17 uid=100000000\n15 gid=2097152\n"]


def test_xattrs_are_pax_schily_records_binary_safe_and_sorted():
    unsorted = (("user.z", b"last"), ("security.capability", CAPABILITY))
    data, _ = write((Entry("bin/ping", Kind.FILE, 0o755, size=1, xattrs=unsorted), b"p"),
                    (Entry("bin/odd", Kind.FILE, 0o755, xattrs=(("user.blob", BINARY_XATTR),)),
                     None))
    ping, odd = members(data)
    assert ping.pax_headers["SCHILY.xattr.security.capability"].encode(
        "utf-8", "surrogateescape") == CAPABILITY
    assert odd.pax_headers["SCHILY.xattr.user.blob"].encode(
        "utf-8", "surrogateescape") == BINARY_XATTR
    first, second = pax_records(data)
    assert first.index(b"security.capability") < first.index(b"user.z")
    assert b"hdrcharset" not in first  # NULs are valid UTF-8: no BINARY marker needed
    assert second.startswith(b"21 hdrcharset=BINARY\n")


def test_no_time_records_and_integer_clamped_mtimes():
    data, _ = write((Entry("old", Kind.FILE, 0o644, mtime=1_000), None),
                    (Entry("new", Kind.FILE, 0o644, mtime=2_000_000_000), None),
                    (Entry("negative", Kind.FILE, 0o644, mtime=-5), None),
                    clamp_mtime=1_500_000_000)
    assert [m.mtime for m in members(data)] == [1_000, 1_500_000_000, 0]
    assert pax_records(data) == []


def test_whiteouts_and_opaque_markers_look_like_containerds():
    out = io.BytesIO()
    writer = LayerWriter(out)
    writer.add_whiteout("etc/gone")
    writer.add_whiteout("top")
    writer.add_opaque("var/cache")
    writer.finish()
    got = members(out.getvalue())
    assert [m.name for m in got] == ["etc/.wh.gone", ".wh.top", "var/cache/.wh..wh..opq"]
    assert {(m.type, m.mode, m.uid, m.gid, m.mtime, m.size) for m in got} == {
        (tarfile.REGTYPE, 0, 0, 0, 0, 0)}


def test_same_input_gives_the_same_bytes(tmp_path):
    source = tmp_path / "f"
    source.write_bytes(os.urandom(3 * CHUNK + 17))
    items = [(Entry("a", Kind.DIR, 0o755, mtime=7), None),
             (Entry("a/f", Kind.FILE, 0o644, size=3 * CHUNK + 17, mtime=7,
                    xattrs=(("security.capability", CAPABILITY),)), str(source)),
             (Entry("a/" + "n" * 200, Kind.FILE, 0o644, size=3), b"abc")]
    first, second = write(*items), write(*items)
    assert first == second
    assert contents(first[0])["a/f"] == source.read_bytes()


def test_a_layer_after_a_large_one_is_the_same_in_the_buffers_that_one_left(tmp_path):
    """Staging buffers go from a finished layer to the next (a RUN's layer no longer zeroes
    new ones): what the large layer left in them never reaches the small one."""
    big = tmp_path / "big"
    big.write_bytes(os.urandom(4 * STAGE))
    small = [(Entry("s", Kind.FILE, 0o644, size=3), b"abc")]
    alone = write(*small)
    write((Entry("big", Kind.FILE, 0o644, size=4 * STAGE), str(big)))
    after = write(*small)
    assert after == alone and contents(after[0]) == {"s": b"abc"}
    assert tarwriter._SPARE.qsize() <= tarwriter._SPARES


@pytest.mark.parametrize("size", [0, 1, 511, 512, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 5])
def test_bodies_of_every_size_from_paths_and_streams(tmp_path, size):
    body = os.urandom(size)
    source = tmp_path / "body"
    source.write_bytes(body)
    data, digest = write((Entry("p", Kind.FILE, 0o644, size=size), str(source)),
                         (Entry("s", Kind.FILE, 0o644, size=size), io.BytesIO(body)),
                         (Entry("b", Kind.FILE, 0o644, size=size), body))
    assert contents(data) == {"p": body, "s": body, "b": body}
    assert digest.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("sizes", [[0], [1, 511, 512, 513], [CHUNK - 1, CHUNK, CHUNK + 1],
                                   [STAGE - 600, 700, 3], [3, 2 * STAGE + 5, 1], [4096] * 3000])
def test_each_file_hash_is_fed_exactly_its_body(tmp_path, sizes):
    """The hashes a caller passes get their own file's bytes, however the bodies fall across the
    staging buffers (split between two, filling one exactly, many to a buffer)."""
    items = []
    for number, size in enumerate(sizes):
        source = tmp_path / f"f{number}"
        source.write_bytes(os.urandom(size))
        items.append((Entry(f"f{number}", Kind.FILE, 0o644, size=size), str(source),
                      hashlib.sha256()))
    out = io.BytesIO()
    writer = LayerWriter(out)
    for entry, source, content_hash in items:
        writer.add(entry, source, content_hash)
    digest = writer.finish()
    for entry, source, content_hash in items:
        with open(source, "rb") as handle:
            assert content_hash.hexdigest() == hashlib.sha256(handle.read()).hexdigest(), entry.path
    assert digest.diff_id == "sha256:" + hashlib.sha256(out.getvalue()).hexdigest()


@pytest.mark.parametrize("actual, declared", [(10, 11), (10, 9), (0, 1), (1, 0),
                                              (CHUNK + 10, CHUNK + 11), (CHUNK, CHUNK - 1),
                                              (2 * CHUNK + 1, 2 * CHUNK)])
def test_a_file_whose_size_changed_is_an_error_not_a_corrupt_tar(tmp_path, actual, declared):
    source = tmp_path / "changing"
    source.write_bytes(b"x" * actual)
    entry = Entry("changing", Kind.FILE, 0o644, size=declared)
    change = "shrank" if actual < declared else "grew"
    with pytest.raises(LayerError, match=f"changing: file {change}"):
        LayerWriter(io.BytesIO()).add(entry, str(source))
    with pytest.raises(LayerError, match=f"changing: file {change}"):
        LayerWriter(io.BytesIO()).add(entry, io.BytesIO(b"x" * actual))
    with pytest.raises(LayerError, match="bytes given for size"):
        LayerWriter(io.BytesIO()).add(entry, b"x" * actual)


@pytest.mark.parametrize("path", ["", "/abs", "./rel", "../up", "a/../b", "a//b", "a/./b", "a/",
                                  "a/..", "nul\0byte"])
def test_unclean_paths_are_refused(path):
    with pytest.raises(LayerError, match="not a clean relative path"):
        LayerWriter(io.BytesIO()).add(Entry(path, Kind.FILE, 0o644), None)


def test_misuse_is_refused(tmp_path):
    writer = LayerWriter(io.BytesIO())
    with pytest.raises(LayerError, match="whiteouts"):
        writer.add(Entry("etc/.wh.passwd", Kind.FILE, 0o644), None)
    with pytest.raises(LayerError, match="only regular files"):
        writer.add(Entry("d", Kind.DIR, 0o755), b"")
    with pytest.raises(LayerError, match="no source"):
        writer.add(Entry("f", Kind.FILE, 0o644, size=3), None)
    with pytest.raises(LayerError, match="device number"):
        writer.add(Entry("dev/x", Kind.CHAR, 0o600, devmajor=1 << 22), None)
    with pytest.raises(LayerError, match="cannot be whited out"):
        writer.add_whiteout("etc/.wh.x")
    os.symlink("/etc/passwd", tmp_path / "link")
    with pytest.raises(OSError):  # a host path source is never followed through a symlink
        writer.add(Entry("f", Kind.FILE, 0o644, size=1), str(tmp_path / "link"))
    writer.finish()
    with pytest.raises(LayerError, match="finished"):
        writer.add(Entry("late", Kind.FILE, 0o644), None)


def test_gnu_tar_agrees(tmp_path):
    data, _ = write(
        (Entry("etc", Kind.DIR, 0o755, mtime=1_700_000_000), None),
        (Entry("etc/hosts", Kind.FILE, 0o644, 0, 0, 1_700_000_000, 10), b"127.0.0.1\n"),
        (Entry("etc/hosts.link", Kind.HARDLINK, 0o644, 0, 0, 1_700_000_000, linkname="etc/hosts"),
         None),
        (Entry("etc/" + "long" * 40, Kind.FILE, 0o600, 1000, 1000, 1_700_000_000, 2), b"hi"),
        (Entry("etc/ünï", Kind.SYMLINK, 0o777, 0, 0, 1_700_000_000, linkname="hosts"), None),
        (Entry("bin/ping", Kind.FILE, 0o755, 0, 0, 1_700_000_000, 4,
               xattrs=(("security.capability", CAPABILITY),)), b"ping"),
        (Entry("dev/null", Kind.CHAR, 0o666, devmajor=1, devminor=3), None),
        (Entry("big", Kind.FILE, 0o644, 5_000_000, 6_000_000), None),
    )
    layer = tmp_path / "layer.tar"
    layer.write_bytes(data)
    listing = subprocess.run(["tar", "--numeric-owner", "-tvf", str(layer)], check=True,
                             capture_output=True, text=True, env={"TZ": "UTC", "LC_ALL": "C.UTF-8"},
                             ).stdout.splitlines()
    assert [line.split()[0] for line in listing] == [
        "drwxr-xr-x", "-rw-r--r--", "hrw-r--r--", "-rw-------", "lrwxrwxrwx", "-rwxr-xr-x",
        "crw-rw-rw-", "-rw-r--r--"]
    assert listing[0].split()[1:] == ["0/0", "0", "2023-11-14", "22:13", "etc/"]
    assert listing[2].endswith("etc/hosts.link link to etc/hosts")
    assert listing[3].split()[1:3] == ["1000/1000", "2"] and listing[3].endswith("long" * 40)
    assert listing[4].endswith("etc/ünï -> hosts")
    assert listing[7].split()[1] == "5000000/6000000"
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "-xpf", str(layer), "-C", str(out)],
                   check=True)
    assert (out / "etc/hosts").read_bytes() == b"127.0.0.1\n"
    assert os.stat(out / "etc/hosts").st_ino == os.stat(out / "etc/hosts.link").st_ino
    assert os.readlink(out / "etc/ünï") == "hosts"
    if os.geteuid() == 0:
        assert os.getxattr(out / "bin/ping", "security.capability") == CAPABILITY


def test_entry_from_stat_and_read_xattrs(tmp_path):
    regular = tmp_path / "tool"
    regular.write_bytes(b"abc")
    os.chmod(regular, 0o4751)
    os.utime(regular, ns=(0, 1_700_000_000_999_999_999))
    os.setxattr(regular, "user.comment", b"host detail")
    os.symlink("tool", tmp_path / "sym")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    entry = entry_from_stat("bin/tool", os.lstat(regular), xattrs=read_xattrs(str(regular)))
    assert entry == Entry("bin/tool", Kind.FILE, 0o4751, os.getuid(), os.getgid(), 1_700_000_000, 3)
    link = entry_from_stat("bin/tool2", os.lstat(regular), linkname="bin/tool")
    assert (link.kind, link.mode, link.size, link.mtime) == (
        Kind.HARDLINK, 0o4751, 0, 1_700_000_000)
    sym = entry_from_stat("bin/sym", os.lstat(tmp_path / "sym"), linkname="tool")
    assert (sym.kind, sym.linkname, sym.size) == (Kind.SYMLINK, "tool", 0)
    assert entry_from_stat("p", os.lstat(tmp_path / "fifo")).kind is Kind.FIFO
    assert entry_from_stat("d", os.lstat(tmp_path / "dir")).kind is Kind.DIR
    null = entry_from_stat("dev/null", os.lstat("/dev/null"))
    assert (null.kind, null.devmajor, null.devminor) == (Kind.CHAR, 1, 3)
    with pytest.raises(LayerError, match="needs its target"):
        entry_from_stat("bin/sym", os.lstat(tmp_path / "sym"))
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "sock"))
        with pytest.raises(LayerError, match="sockets"):
            entry_from_stat("sock", os.lstat(tmp_path / "sock"))
    assert read_xattrs(str(tmp_path / "sym")) == ()
    if os.geteuid() == 0:
        os.setxattr(regular, "security.capability", CAPABILITY)
        assert read_xattrs(str(regular)) == (("security.capability", CAPABILITY),)
        assert read_xattrs(str(tmp_path / "sym")) == ()  # not followed to the file
    assert stat.S_ISREG(os.lstat(regular).st_mode)


def test_a_files_own_digest_is_computed_on_the_way(tmp_path):
    """The build cache asks for each context file's sha256 while the layer is written (one read);
    files span several staging buffers and small ones share a buffer."""
    files = {"big": os.urandom(13 << 20), "small": b"tiny", "empty": b""}
    hashes = {}
    out = io.BytesIO()
    writer = LayerWriter(out)
    for name, data in files.items():
        path = tmp_path / name
        path.write_bytes(data)
        hashes[name] = hashlib.sha256()
        writer.add(Entry(name, Kind.FILE, 0o644, size=len(data)), str(path), hashes[name])
    writer.finish()
    for name, data in files.items():
        assert hashes[name].hexdigest() == hashlib.sha256(data).hexdigest()
