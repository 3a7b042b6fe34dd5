"""layers/flatten.py: the flat root-filesystem tar of a layer stack (`-o type=tar`) holds what
applying the same layers to a directory (layers/unpack.py, as `-o type=local` and every snapshot
do) leaves there: the two are compared entry by entry, owners, modes, link targets, contents and
hardlink groups included."""
from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from layers.errors import LayerError
from layers.flatten import write_flat_tar
from layers.unpack import apply_layer
from tests.test_unpack import tar_of

REG, DIR, SYM, LNK, FIFO = (tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE,
                            tarfile.FIFOTYPE)
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="owners need root to compare")

STACKS = [
    ("one-layer", [[("d", DIR), ("d/f", REG, b"f", {"uid": 7, "gid": 8, "mode": 0o4750}),
                    ("d/s", SYM, "f"), ("fifo", FIFO)]]),
    ("whiteout-file-and-dir", [[("a", DIR), ("a/x", REG, b"x"), ("a/y", REG, b"y"), ("b", DIR),
                                ("b/z", REG, b"z")],
                               [("a/.wh.x", REG), (".wh.b", REG)]]),
    ("opaque-keeps-its-own-layer", [[("a", DIR), ("a/old", REG, b"old")],
                                    [("a", DIR), ("a/new", REG, b"new"),
                                     ("a/.wh..wh..opq", REG)]]),
    ("dir-replaced-by-file-and-back", [[("a", DIR), ("a/x", REG, b"x")], [("a", REG, b"file")],
                                       [("a", DIR, {"mode": 0o700}), ("a/y", REG, b"y")]]),
    ("dir-attributes-updated", [[("a", DIR), ("a/x", REG, b"x")],
                                [("a", DIR, {"mode": 0o711, "uid": 5})]]),
    ("implicit-parents", [[("p/q/r", REG, b"deep")]]),
    ("symlink-parent-followed-inside", [[("real", DIR), ("link", SYM, "/real")],
                                        [("link/f", REG, b"through")]]),
    ("relative-symlink-dotdot", [[("a", DIR), ("real", DIR), ("a/up", SYM, "../../../real")],
                                 [("a/up/f", REG, b"up")]]),
    ("hardlinks-kept", [[("f", REG, b"shared", {"uid": 3}), ("g", LNK, "f")]]),
    ("hardlink-target-deleted", [[("z", REG, b"body"), ("a", LNK, "z"), ("m", LNK, "z")],
                                 [(".wh.z", REG)]]),
    ("hardlink-target-overwritten", [[("f", REG, b"old"), ("h", LNK, "f")],
                                     [("f", REG, b"new")]]),
    ("file-replaced-by-symlink", [[("f", REG, b"f")], [("f", SYM, "/etc/passwd")]]),
]


def _apply(layers: list[io.BytesIO], root: Path) -> dict[str, tuple]:
    for layer in layers:
        layer.seek(0)
        apply_layer(layer, str(root))
    found: dict[str, tuple] = {}
    inodes: dict[int, str] = {}
    for path in sorted(root.rglob("*")):
        st = os.lstat(path)
        rel = str(path.relative_to(root))
        body = (path.read_bytes() if stat.S_ISREG(st.st_mode)
                else os.readlink(path) if stat.S_ISLNK(st.st_mode) else None)
        group = inodes.setdefault(st.st_ino, rel) if stat.S_ISREG(st.st_mode) else None
        found[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                      body, group)
    return found


def _flatten(layers: list[io.BytesIO], tmp_path: Path) -> dict[str, tuple]:
    paths = []
    for number, layer in enumerate(layers):
        path = tmp_path / f"layer{number}.tar"
        path.write_bytes(layer.getvalue())
        paths.append(str(path))
    out = io.BytesIO()
    write_flat_tar(out, paths)
    out.seek(0)
    found: dict[str, tuple] = {}
    with tarfile.open(fileobj=out) as tar:
        for info in tar:
            kind = {DIR: stat.S_IFDIR, SYM: stat.S_IFLNK, FIFO: stat.S_IFIFO}.get(
                info.type, stat.S_IFREG)
            if info.islnk():
                found[info.name] = found[info.linkname][:5] + (info.linkname,)
                continue
            body = (tar.extractfile(info).read() if info.isfile()
                    else info.linkname if info.issym() else None)
            found[info.name] = (kind, info.mode, info.uid, info.gid, body,
                                info.name if info.isfile() else None)
    return found


@ROOT_ONLY
@pytest.mark.parametrize("name,stack", STACKS, ids=[name for name, _ in STACKS])
def test_the_flat_tar_holds_what_applying_the_layers_leaves(tmp_path, name, stack):
    layers = [tar_of(*members) for members in stack]
    root = tmp_path / "root"
    root.mkdir()
    applied = _apply(layers, root)
    flat = _flatten(layers, tmp_path)
    # hardlink groups are named by their first member, in each listing's own order
    groups = {}
    for listing in (applied, flat):
        names = {}
        for rel, entry in listing.items():
            if entry[5] is not None:
                names.setdefault(entry[5], set()).add(rel)
        groups[id(listing)] = sorted(map(sorted, names.values()))
    assert groups[id(flat)] == groups[id(applied)]
    strip = lambda listing: {rel: entry[:5] for rel, entry in listing.items()}
    assert strip(flat) == strip(applied)


def test_no_whiteout_survives_and_parents_come_first(tmp_path):
    layers = [tar_of(("a", DIR), ("a/b", DIR), ("a/b/c", REG, b"c")),
              tar_of(("a/.wh.b", REG), ("a/.wh.gone", REG), ("z", REG, b"z"))]
    flat = _flatten(layers, tmp_path)
    assert list(flat) == ["a", "z"]


@pytest.mark.parametrize("members,message", [
    ([("../../escape", REG, b"x")], "leads outside the root"),
    ([("h", LNK, "missing")], "not a regular file of the image"),
    ([("f", REG, b"f"), ("f/g", REG, b"g")], "is not a directory"),
    ([("a", SYM, "b"), ("b", SYM, "a"), ("a/f", REG, b"f")], "too many levels"),
])
def test_hostile_or_broken_layers_are_refused(tmp_path, members, message):
    with pytest.raises(LayerError, match=message):
        _flatten([tar_of(*members)], tmp_path)


def test_the_epoch_is_every_mtime(tmp_path):
    layer = tmp_path / "layer.tar"
    layer.write_bytes(tar_of(("d", DIR, {"mtime": 5}), ("d/f", REG, b"f", {"mtime": 2 ** 31}))
                      .getvalue())
    out = io.BytesIO()
    write_flat_tar(out, [str(layer)], mtime=1000)
    out.seek(0)
    with tarfile.open(fileobj=out) as tar:
        assert {info.name: info.mtime for info in tar} == {"d": 1000, "d/f": 1000}


def test_nesting_deeper_than_python_recurses_is_flattened(tmp_path):
    deep = "/".join(["d"] * 1500)
    layers = [tar_of((deep + "/f", REG, b"deep")), tar_of((".wh.d", REG), ("g", REG, b"g"))]
    assert list(_flatten(layers[:1], tmp_path))[-1] == deep + "/f"
    assert list(_flatten(layers, tmp_path)) == ["g"]
