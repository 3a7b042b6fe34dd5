"""layers.unpack: hostile layers never write outside the root; whiteouts, attributes, hardlinks
and replacements come out as `docker load` or an overlay mount would see them."""
from __future__ import annotations

import gzip
import io
import os
import shutil
import stat
import tarfile
import tempfile
import traceback
from pathlib import Path

import pytest

from layers.compression import decompressing_reader
from layers.errors import LayerError
from layers.tarwriter import Entry, Kind, LayerWriter
from layers.unpack import apply_layer

PRIVILEGED = os.geteuid() == 0
ROOT_ONLY = pytest.mark.skipif(not PRIVILEGED, reason="needs root")
CAPABILITY = bytes.fromhex("0100000200300000000000000000000000000000")


def tar_of(*members: tuple) -> io.BytesIO:
    """A tar made with Python's tarfile, which writes whatever it is told (hostile names too).
    A member is (name, type[, linkname or content][, dict of TarInfo attributes])."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, *rest in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            extra = rest[-1] if rest and isinstance(rest[-1], dict) else {}
            value = rest[0] if rest and not isinstance(rest[0], dict) else None
            body = None
            if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                info.linkname = value
            elif kind == tarfile.REGTYPE:
                body = value if value is not None else b""
                info.size = len(body)
            for key, attribute in extra.items():
                setattr(info, key, attribute)
            tar.addfile(info, io.BytesIO(body) if body is not None else None)
    out.seek(0)
    return out


def layer_of(*items: tuple[Entry, object]) -> io.BytesIO:
    """A tar made with our own writer."""
    out = io.BytesIO()
    writer = LayerWriter(out)
    for entry, source in items:
        if entry.path.rpartition("/")[2] == ".wh..wh..opq":
            writer.add_opaque(entry.path.rpartition("/")[0])
        elif entry.path.rpartition("/")[2].startswith(".wh."):
            parent, _, name = entry.path.rpartition("/")
            writer.add_whiteout(f"{parent}/{name[4:]}" if parent else name[4:])
        else:
            writer.add(entry, source)
    writer.finish()
    out.seek(0)
    return out


def snapshot(directory: Path) -> dict[str, tuple]:
    """Everything about a tree that a stray write could change."""
    found = {}
    for path in sorted(directory.rglob("*")) + [directory]:
        st = os.lstat(path)
        content = (path.read_bytes() if stat.S_ISREG(st.st_mode)
                   else os.readlink(path) if path.is_symlink() else None)
        found[str(path.relative_to(directory))] = (st.st_mode, st.st_uid, st.st_mtime_ns,
                                                   st.st_nlink, content)
    return found


@pytest.fixture
def place(tmp_path):
    """An empty root with a sentinel directory beside it, which no layer may touch."""
    root, sentinel = tmp_path / "root", tmp_path / "sentinel"
    root.mkdir()
    sentinel.mkdir()
    (sentinel / "keep").write_bytes(b"precious")
    before = snapshot(sentinel)
    yield root, sentinel
    assert snapshot(sentinel) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root", "sentinel"]


def tree(root: Path) -> dict[str, str]:
    """root's content: "dir", "-> target", or the file's text."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = "-> " + os.readlink(path)
        elif path.is_dir():
            out[rel] = "dir"
        elif stat.S_ISCHR(os.lstat(path).st_mode):
            device = os.lstat(path).st_rdev
            out[rel] = f"chr {os.major(device)}/{os.minor(device)}"
        else:
            out[rel] = path.read_text()
    return out


def mode_and_mtime(path: Path) -> tuple[int, float]:
    st = os.lstat(path)
    return stat.S_IMODE(st.st_mode), st.st_mtime


# -- hostile input -------------------------------------------------------------------------------

REG, DIR, SYM = tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE
LNK, CHR = tarfile.LNKTYPE, tarfile.CHRTYPE

REFUSED = [
    pytest.param([("../x", REG, b"out")], "leads outside the root", id="dotdot"),
    pytest.param([("a/../../x", REG, b"out")], "leads outside the root", id="dotdot-inner"),
    pytest.param([("ok", DIR), ("ok/../../sentinel/keep", REG, b"out")], "leads outside",
                 id="dotdot-deep"),
    pytest.param([("h", LNK, "/etc/passwd")], "not in the root", id="hardlink-abs"),
    pytest.param([("h", LNK, "../sentinel/keep")], "leads outside the root", id="hardlink-dotdot"),
    pytest.param([("evil", SYM, "SENTINEL"), ("h", LNK, "evil/keep")], "not in the root",
                 id="hardlink-through-symlink"),
    pytest.param([("h", LNK, "later"), ("later", REG, b"x")], "not in the root",
                 id="hardlink-forward"),
    pytest.param([("d", DIR), ("h", LNK, "d")], "hardlink to a directory", id="hardlink-dir"),
    pytest.param([("a", SYM, "b"), ("b", SYM, "a"), ("a/x", REG, b"loop")], "too many levels",
                 id="symlink-loop"),
    pytest.param([("f", REG, b"file"), ("f/x", REG, b"under a file")], "not a directory",
                 id="file-as-parent"),
    pytest.param([("d/.wh.", REG)], "whiteout without a name", id="bare-whiteout"),
    pytest.param([("t", REG, b"", {"mtime": 10**20})], "^t: ", id="absurd-mtime"),
    pytest.param([("u", REG, b"", {"uid": 10**15})], "^u: ", id="absurd-uid", marks=ROOT_ONLY),
]


@pytest.mark.parametrize("members, message", REFUSED)
def test_hostile_entries_are_refused(place, members, message):
    root, sentinel = place
    members = [tuple(str(sentinel) if v == "SENTINEL" else v for v in m) for m in members]
    with pytest.raises(LayerError, match=message):
        apply_layer(tar_of(*members), str(root))


CONTAINED = [
    pytest.param([("/abs", REG, b"in")], {"abs": "in"}, id="absolute-name"),
    pytest.param([("//etc/x", REG, b"in")], {"etc": "dir", "etc/x": "in"}, id="double-slash"),
    pytest.param([("evil", SYM, "../sentinel"), ("evil/pwned", REG, b"in")],
                 {"evil": "-> ../sentinel", "sentinel": "dir", "sentinel/pwned": "in"},
                 id="symlink-parent-relative"),
    pytest.param([("evil", SYM, "/"), ("evil/etc/x", REG, b"in")],
                 {"evil": "-> /", "etc": "dir", "etc/x": "in"}, id="symlink-to-slash"),
    pytest.param([("a", DIR), ("a/up", SYM, "../../../.."), ("a/up/b/x", REG, b"in")],
                 {"a": "dir", "a/up": "-> ../../../..", "b": "dir", "b/x": "in"},
                 id="symlink-climbing"),
    pytest.param([("link", SYM, "SENTINEL/keep"), ("link", REG, b"replaced")],
                 {"link": "replaced"}, id="file-over-symlink"),
    pytest.param([("d", SYM, "SENTINEL"), ("d", DIR, {"mode": 0o700})], {"d": "dir"},
                 id="dir-over-symlink"),
    pytest.param([("link", SYM, "SENTINEL/keep"), ("h", LNK, "link", {"mode": 0o777})],
                 {"link": "-> SENTINEL/keep", "h": "-> SENTINEL/keep"},
                 id="hardlink-to-outward-symlink"),
    pytest.param([("evil", SYM, "SENTINEL"), ("evil/.wh.keep", REG)], {"evil": "-> SENTINEL"},
                 id="whiteout-through-symlink"),
    pytest.param([("evil", SYM, "SENTINEL"), ("evil/.wh..wh..opq", REG)], {"evil": "-> SENTINEL"},
                 id="opaque-through-symlink"),
    pytest.param([("dev/evil", CHR, {"devmajor": 1, "devminor": 3})],
                 {"dev": "dir", "dev/evil": "chr 1/3"} if PRIVILEGED else {"dev": "dir"},
                 id="device"),
]


@pytest.mark.parametrize("members, expected", CONTAINED)
def test_hostile_entries_stay_inside_the_root(place, members, expected):
    root, sentinel = place
    members = [tuple(v.replace("SENTINEL", str(sentinel)) if isinstance(v, str) else v for v in m)
               for m in members]
    warnings = apply_layer(tar_of(*members), str(root))
    assert tree(root) == {k: v.replace("SENTINEL", str(sentinel)) for k, v in expected.items()}
    assert warnings == ([] if PRIVILEGED or all(m[1] != CHR for m in members)
                        else ["dev/evil: device node skipped (needs root)"])


def test_an_absolute_symlink_parent_resolves_under_the_root(place):
    """A symlink to the sentinel's absolute host path means that path inside the root."""
    root, sentinel = place
    apply_layer(tar_of(("evil", SYM, str(sentinel)), ("evil/pwned", REG, b"in")), str(root))
    assert (root / str(sentinel).lstrip("/") / "pwned").read_bytes() == b"in"


def test_corrupt_or_truncated_input_is_a_layer_error(place):
    root, _ = place
    whole = tar_of(("f", REG, os.urandom(100_000))).getvalue()
    for broken in (io.BytesIO(b"\x01" * 1024), io.BytesIO(whole[:50_000]),
                   decompressing_reader(io.BytesIO(gzip.compress(whole)[:50_000]))):
        with pytest.raises(LayerError, match="not a valid layer tar"):
            apply_layer(broken, str(root))


# -- whiteouts -----------------------------------------------------------------------------------

def lower(root: Path) -> None:
    for rel in ("a", "keep", "d/x", "d/sub/y", "gone/deep/z", "e/old"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("lower")


def whiteout_layer() -> io.BytesIO:
    return tar_of(("d", DIR), ("d/early", REG, b"this layer"), ("d/sub", DIR),
                  ("d/sub/new", REG, b"this layer"), (".wh.a", REG), (".wh.gone", REG),
                  ("d/.wh..wh..opq", REG), ("mine", REG, b"this layer"), (".wh.mine", REG),
                  (".wh.e", REG), ("e", DIR), ("e/fresh", REG, b"this layer"), (".wh.absent", REG))


def test_whiteouts_applied(place):
    root, _ = place
    lower(root)
    apply_layer(whiteout_layer(), str(root))
    assert tree(root) == {"keep": "lower", "d": "dir", "d/early": "this layer", "d/sub": "dir",
                          "d/sub/new": "this layer", "mine": "this layer", "e": "dir",
                          "e/fresh": "this layer"}


def test_whiteouts_in_overlay_form(place):
    root, _ = place
    apply_layer(whiteout_layer(), str(root), whiteouts="overlay")
    assert tree(root) == {"a": "chr 0/0", "gone": "chr 0/0", "absent": "chr 0/0", "d": "dir",
                          "d/early": "this layer", "d/sub": "dir", "d/sub/new": "this layer",
                          "mine": "this layer", "e": "dir", "e/fresh": "this layer"}
    if PRIVILEGED:
        assert os.getxattr(root / "d", "trusted.overlay.opaque") == b"y"
        assert os.getxattr(root / "e", "trusted.overlay.opaque") == b"y"  # rm -rf e && mkdir e
        assert "trusted.overlay.opaque" not in os.listxattr(root / "d/sub")


def test_opaque_xattr_name_for_unprivileged_overlay(place):
    root, _ = place
    apply_layer(tar_of(("d", DIR), ("d/.wh..wh..opq", REG)), str(root), whiteouts="overlay",
                opaque_xattr="user.overlay.opaque")
    assert os.getxattr(root / "d", "user.overlay.opaque") == b"y"


def test_overlay_xattrs_in_a_layer_are_not_applied(place):
    root, _ = place
    layer = tar_of(("d", DIR, {"pax_headers": {"SCHILY.xattr.trusted.overlay.opaque": "y",
                                               "SCHILY.xattr.user.overlay.redirect": "/x"}}))
    warnings = apply_layer(layer, str(root), whiteouts="overlay")
    assert os.listxattr(root / "d") == []
    assert len(warnings) == 2 and all("overlayfs xattr" in w for w in warnings)


def test_whiteout_mode_is_checked(place):
    with pytest.raises(ValueError):
        apply_layer(tar_of(), str(place[0]), whiteouts="delete")


# -- attributes ----------------------------------------------------------------------------------

def test_attributes_of_every_kind(place):
    root, _ = place
    layer = layer_of(
        (Entry("bin", Kind.DIR, 0o751, 11, 12, 1_000_000), None),
        (Entry("bin/tool", Kind.FILE, 0o4755, 13, 14, 2_000_000, 4,
               xattrs=(("security.capability", CAPABILITY),)), b"tool"),
        (Entry("bin/sh", Kind.SYMLINK, 0o777, 15, 16, 3_000_000, linkname="tool"), None),
        (Entry("run/fifo", Kind.FIFO, 0o620, 17, 18, 4_000_000), None),
        (Entry("dev/null", Kind.CHAR, 0o666, 0, 0, 5_000_000, devmajor=1, devminor=3), None),
    )
    warnings = apply_layer(layer, str(root))
    def check(rel, kind, mode, owner, mtime):
        st = os.lstat(root / rel)
        assert stat.S_IFMT(st.st_mode) == kind
        if mode is not None:
            assert stat.S_IMODE(st.st_mode) == mode
        if PRIVILEGED:
            assert (st.st_uid, st.st_gid) == owner
        assert st.st_mtime_ns == mtime * 1_000_000_000

    check("bin", stat.S_IFDIR, 0o751, (11, 12), 1_000_000)
    check("bin/tool", stat.S_IFREG, 0o4755, (13, 14), 2_000_000)
    check("bin/sh", stat.S_IFLNK, None, (15, 16), 3_000_000)
    check("run/fifo", stat.S_IFIFO, 0o620, (17, 18), 4_000_000)
    assert (root / "bin/tool").read_bytes() == b"tool"
    if PRIVILEGED:
        check("dev/null", stat.S_IFCHR, 0o666, (0, 0), 5_000_000)
        assert os.getxattr(root / "bin/tool", "security.capability") == CAPABILITY
        assert warnings == []
    else:
        assert not (root / "dev/null").exists()
        assert any("device node skipped" in w for w in warnings)


@ROOT_ONLY
@pytest.mark.parametrize("setgid", [False, True])
def test_root_owned_entries_are_root_owned_in_any_root(place, setgid):
    """New inodes of a fresh root need no chown for 0:0 entries, unless the root is setgid: its
    group is then what they are born with, and they must still come out 0:0."""
    root, _ = place
    os.chown(root, 0, 4321)
    os.chmod(root, 0o2755 if setgid else 0o755)
    layer = tar_of(("d", DIR), ("d/f", REG, b"f"), ("d/l", SYM, "f"), ("d/e", DIR),
                   ("g", REG, b"g", {"uid": 7, "gid": 8}))
    apply_layer(layer, str(root))
    owners = {rel: (st.st_uid, st.st_gid) for rel in ("d", "d/f", "d/l", "d/e", "g")
              for st in [os.lstat(root / rel)]}
    assert owners == {"d": (0, 0), "d/f": (0, 0), "d/l": (0, 0), "d/e": (0, 0), "g": (7, 8)}


def test_read_only_directories_are_filled_then_closed(place):
    root, _ = place
    layer = tar_of(("ro", DIR, {"mode": 0o555, "mtime": 1000}),
                   ("ro/sub", DIR, {"mode": 0o500, "mtime": 2000}),
                   ("ro/sub/f", REG, b"content", {"mode": 0o400, "mtime": 3000}),
                   ("ro/g", REG, b"more", {"mode": 0o444}))
    apply_layer(layer, str(root))
    assert mode_and_mtime(root / "ro") == (0o555, 1000)
    assert mode_and_mtime(root / "ro/sub") == (0o500, 2000)
    assert (root / "ro/sub/f").read_bytes() == b"content"
    assert stat.S_IMODE(os.stat(root / "ro/sub/f").st_mode) == 0o400


def test_hardlinks_within_the_layer_share_the_inode_and_take_the_link_header(place):
    root, _ = place
    layer = tar_of(("bin", DIR), ("bin/tool", REG, b"tool", {"mode": 0o755}),
                   ("bin/alias", LNK, "bin/tool", {"mode": 0o700, "mtime": 1234}),
                   ("/bin/abs-alias", LNK, "/bin/tool", {"mode": 0o700, "mtime": 1234}))
    apply_layer(layer, str(root))
    tool, alias, abs_alias = (os.stat(root / p) for p in ("bin/tool", "bin/alias", "bin/abs-alias"))
    assert tool.st_ino == alias.st_ino == abs_alias.st_ino and tool.st_nlink == 3
    assert (stat.S_IMODE(tool.st_mode), tool.st_mtime) == (0o700, 1234)  # as Docker applies it


def test_replacing_existing_paths(place):
    root, _ = place
    (root / "was_dir/inner").mkdir(parents=True)
    (root / "was_dir/inner/f").write_text("lower")
    (root / "was_file").write_text("lower")
    (root / "kept").mkdir()
    (root / "kept/child").write_text("lower")
    (root / "was_link").symlink_to("kept")
    layer = tar_of(("was_dir", REG, b"now a file"), ("was_file", DIR),
                   ("kept", DIR, {"mode": 0o700, "mtime": 99}), ("was_link", DIR))
    apply_layer(layer, str(root))
    assert tree(root) == {"was_dir": "now a file", "was_file": "dir", "kept": "dir",
                          "kept/child": "lower", "was_link": "dir"}
    assert mode_and_mtime(root / "kept") == (0o700, 99)


def test_a_directory_of_the_layer_replaced_by_a_file_later_in_it(place):
    """Found by tests/fuzz/fuzz_unpack.py: the deferred attributes of a/b/c must not be set
    once `a` is a file (that was a NotADirectoryError)."""
    root, _ = place
    apply_layer(tar_of(("a/b/c", DIR), ("a", REG, b"file")), str(root))
    assert tree(root) == {"a": "file"}


def test_symlinks_of_lower_layers_are_followed_inside_the_root(place):
    root, _ = place
    (root / "usr/lib").mkdir(parents=True)
    (root / "lib").symlink_to("usr/lib")
    apply_layer(tar_of(("lib/libx.so", REG, b"elf")), str(root))
    assert (root / "usr/lib/libx.so").read_bytes() == b"elf"
    assert (root / "lib").is_symlink()


def test_a_layer_of_our_writer_round_trips(place, tmp_path):
    root, _ = place
    layer = layer_of(
        (Entry("etc", Kind.DIR, 0o755, mtime=5), None),
        (Entry("etc/" + "n" * 150, Kind.FILE, 0o600, size=4, mtime=6), b"long"),
        (Entry("etc/ünï", Kind.SYMLINK, 0o777, mtime=7, linkname="n" * 150), None),
    )
    apply_layer(layer, str(root))
    assert (root / "etc" / ("n" * 150)).read_bytes() == b"long"
    assert os.readlink(root / "etc/ünï") == "n" * 150


# -- unprivileged --------------------------------------------------------------------------------

def as_nobody(function, *args) -> None:
    """Run `function(*args)` in a child process as uid/gid 65534; its assertion errors fail here."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            function(*args)
            code = 0
        except (AssertionError, OSError, LayerError):
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the unprivileged check failed (see stderr)"


@pytest.fixture
def nobody_place():
    base = Path(tempfile.mkdtemp(prefix="unpack-nobody-"))
    os.chmod(base, 0o755)
    root = base / "root"
    root.mkdir()
    (root / "usr").mkdir()
    (root / "usr/old").write_text("lower")
    (root / "gone/deep").mkdir(parents=True)
    (root / "gone/deep/f").write_text("lower")
    for path in [root, *root.rglob("*")]:
        os.chown(path, 65534, 65534)
    os.chmod(root / "usr", 0o555)  # a read-only lower directory, as in many base images
    os.chmod(root / "gone/deep", 0o555)
    yield root
    shutil.rmtree(base)


def _unprivileged_apply(root: Path) -> None:
    layer = tar_of(("usr/new", REG, b"added", {"uid": 0, "gid": 0}),
                   ("dev/null", CHR, {"devmajor": 1, "devminor": 3}),
                   ("ro", DIR, {"mode": 0o555}), ("ro/f", REG, b"in a 0555 dir", {"mode": 0o444}),
                   (".wh.gone", REG), ("d", DIR), ("d/.wh..wh..opq", REG))
    warnings = apply_layer(layer, str(root))
    assert (root / "usr/new").read_bytes() == b"added"
    assert os.stat(root / "usr/new").st_uid == 65534  # ownership is only set by root
    assert stat.S_IMODE(os.stat(root / "usr").st_mode) == 0o555  # opened up, then closed again
    assert (root / "ro/f").read_bytes() == b"in a 0555 dir"
    assert stat.S_IMODE(os.stat(root / "ro").st_mode) == 0o555
    assert not (root / "gone").exists()
    assert not (root / "dev/null").exists()
    assert warnings == ["dev/null: device node skipped (needs root)"]


@ROOT_ONLY
def test_unprivileged_application(nobody_place):
    as_nobody(_unprivileged_apply, nobody_place)
