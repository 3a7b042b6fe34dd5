"""The walk diff of a working root (layers/walkdiff.py) against the records of the walk before:
what a change leaves in the upper directory, including the changes a size-and-mtime comparison
misses (content rewritten with the old mtime put back, in the same clock tick as the records)."""
from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from builder.cache.prune import prune, usage
from layers.image import chain_ids
from layers.rootpool import RootPool, roots_dir
from layers.snapshots import SnapshotStore
from layers.union import FILES, OVERLAY, UnionView
from layers.walkdiff import WorkingRoot

MTIME = 1_000_000_000_000_000_000


def rewrite_keeping_times(path: Path) -> None:
    """New content of the same size, the old mtime put back (`touch -r`)."""
    st = os.lstat(path)
    path.write_bytes(path.read_bytes().upper())
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def set_xattr(path: Path) -> None:
    os.setxattr(path, "user.pybuild-test", b"1")


@pytest.fixture
def snapshot(tmp_path) -> Path:
    layer = tmp_path / "layer"
    (layer / "d/sub").mkdir(parents=True)
    for rel, text in (("a", "alpha"), ("d/b", "bravo"), ("d/sub/c", "charlie")):
        (layer / rel).write_text(text)
    os.symlink(str(tmp_path / "outside"), layer / "l")
    for path in sorted(layer.rglob("*"), reverse=True):
        os.utime(path, ns=(MTIME, MTIME), follow_symlinks=False)
    return layer


@pytest.mark.parametrize("change, expected", [
    pytest.param(None, set(), id="nothing"),
    pytest.param(lambda r: rewrite_keeping_times(r / "a"), {"a"}, id="touch -r"),
    pytest.param(lambda r: rewrite_keeping_times(r / "d/sub/c"), {"d", "d/sub", "d/sub/c"},
                 id="touch -r deep"),
    pytest.param(lambda r: os.chmod(r / "d/b", 0o600), {"d", "d/b"}, id="chmod"),
    pytest.param(lambda r: os.utime(r / "d/b", ns=(MTIME, MTIME)), {"d", "d/b"},
                 id="utime to the same times"),
    pytest.param(lambda r: set_xattr(r / "a"), {"a"}, id="xattr"),
    pytest.param(lambda r: os.link(r / "a", r / "d/a2"), {"a", "d", "d/a2"}, id="hard link"),
    pytest.param(lambda r: os.rename(r / "d/b", r / "d/b2"), {"d", "d/b", "d/b2"}, id="rename"),
    pytest.param(lambda r: [os.unlink(r / "d/sub/c"), os.rmdir(r / "d/sub")], {"d", "d/sub"},
                 id="directory deleted"),
])
def test_a_change_shows_in_the_upper_dir(snapshot, tmp_path, change, expected):
    """Each change is made at once after the records are taken, as fast as a RUN could."""
    root, upper = tmp_path / "root", tmp_path / "upper"
    root.mkdir()
    upper.mkdir()
    working = WorkingRoot(str(root), devices=True)
    working.extend([str(snapshot)], OVERLAY, ("sha256:x",))
    if change is not None:
        change(root)
    working.diff(str(upper), UnionView([str(snapshot)]))
    assert {str(p.relative_to(upper)) for p in upper.rglob("*")} == expected
    if "a" in expected and (root / "a").exists():
        assert (upper / "a").read_bytes() == (root / "a").read_bytes()


def test_a_second_diff_finds_only_what_changed_since_the_first(snapshot, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    working = WorkingRoot(str(root), devices=True)
    working.extend([str(snapshot)], OVERLAY, ("sha256:x",))
    view = UnionView([str(snapshot)])
    found = []
    for step, change in enumerate((lambda: (root / "n").write_text("1"),
                                   lambda: rewrite_keeping_times(root / "d/b"), lambda: None)):
        change()
        upper = tmp_path / f"upper{step}"
        upper.mkdir()
        working.diff(str(upper), view)
        found.append({str(p.relative_to(upper)) for p in upper.rglob("*")
                      if not stat.S_ISDIR(os.lstat(p).st_mode)})
    assert found == [{"n"}, {"d/b"}, set()]


def test_a_placed_entry_moved_away_and_back_is_no_change(snapshot, tmp_path):
    """The sandbox moves the image's /etc/hosts aside for a RUN and back (its ctime changes)."""
    root, upper = tmp_path / "root", tmp_path / "upper"
    root.mkdir()
    upper.mkdir()
    working = WorkingRoot(str(root), devices=True)
    working.extend([str(snapshot)], OVERLAY, ("sha256:x",))
    os.rename(root / "d/b", tmp_path / "aside")
    (root / "d/b").write_text("placed")
    os.unlink(root / "d/b")
    os.rename(tmp_path / "aside", root / "d/b")
    os.utime(root / "d", ns=(MTIME, MTIME))
    working.diff(str(upper), UnionView([str(snapshot)]), settled=("d/b",))
    assert list(upper.rglob("*")) == []


def tree_of(root: Path) -> dict[str, tuple]:
    """Every entry under `root`: type and mode, owner, mtime, content or link target."""
    found = {}
    for path in [root, *root.rglob("*")]:
        st = os.lstat(path)
        what = (path.read_bytes() if stat.S_ISREG(st.st_mode) else
                os.readlink(path) if stat.S_ISLNK(st.st_mode) else None)
        found[str(path.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid,
                                              None if stat.S_ISLNK(st.st_mode) else st.st_mtime_ns,
                                              what)
    return found


def remade(r: Path) -> None:
    shutil.rmtree(r / "d")
    (r / "d").mkdir()
    (r / "d/new").write_text("new")


def dir_to_symlink(r: Path) -> None:
    shutil.rmtree(r / "d/sub")
    os.symlink(str(r.parent / "outside"), r / "d/sub")


RUNS = [
    pytest.param([lambda r: (r / "new").write_text("n")], id="file added"),
    pytest.param([lambda r: rewrite_keeping_times(r / "d/b")], id="file rewritten"),
    pytest.param([lambda r: os.unlink(r / "a")], id="file deleted"),
    pytest.param([lambda r: shutil.rmtree(r / "d/sub")], id="directory deleted"),
    pytest.param([remade], id="directory remade (opaque)"),
    pytest.param([lambda r: [shutil.rmtree(r / "d"), (r / "d").write_text("f")]],
                 id="directory made a file"),
    pytest.param([lambda r: [os.unlink(r / "a"), (r / "a").mkdir(), (r / "a/x").write_text("")]],
                 id="file made a directory"),
    pytest.param([lambda r: os.chmod(r / "d", 0o700), lambda r: os.chown(r / "d/b", 7, 8)],
                 id="chmod, chown"),
    pytest.param([dir_to_symlink, lambda r: (r / "d/more").mkdir()], id="directory made a symlink"),
    pytest.param([lambda r: [os.unlink(r / "l"), (r / "l").mkdir(), (r / "l/c").write_text("")]],
                 id="symlink out made a directory"),
    pytest.param([lambda r: os.link(r / "a", r / "d/hard"), lambda r: os.unlink(r / "d/b")],
                 id="hard link"),
]


@pytest.mark.parametrize("form", [OVERLAY, FILES])
@pytest.mark.parametrize("runs", RUNS)
def test_a_root_rewound_past_its_runs_is_the_image_below_them(snapshot, tmp_path, runs, form):
    """The layers RUNs added are taken off again from their snapshots alone: the root is then
    what a fresh copy of the image below them is, and nothing outside it was touched."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "c").write_text("keep")
    root = tmp_path / "root"
    root.mkdir()
    working = WorkingRoot(str(root), devices=True)
    working.extend([str(snapshot)], form, ("sha256:base",))
    view, uppers = UnionView([str(snapshot)], form), []
    for step, run in enumerate(runs):
        run(root)
        upper = tmp_path / f"upper{step}"
        upper.mkdir()
        working.diff(str(upper), view)
        uppers.append(str(upper))
        view = UnionView([str(snapshot), *uppers], form)
    working.rewind(uppers, [str(snapshot)], form, ("sha256:base",))
    working.extend([], form, ("sha256:base",))
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    WorkingRoot(str(fresh), devices=True).extend([str(snapshot)], form, ("sha256:base",))
    assert tree_of(root) == tree_of(fresh)
    assert tree_of(outside)["c"][-1] == b"keep"
    upper = tmp_path / "after"
    upper.mkdir()
    working.diff(str(upper), UnionView([str(snapshot)], form))
    assert list(upper.iterdir()) == []


def test_a_later_build_takes_the_kept_root_back_to_its_image(snapshot, tmp_path):
    """Two pools on one cache, as two builds: the second takes the root the first gave back
    (the very directory, not a copy) and moves it down past the first build's RUN layer."""
    cache = tmp_path / "cache"
    store = SnapshotStore(str(cache))
    base_chain = chain_ids(("sha256:base",))[0]
    shutil.copytree(snapshot, store.path(base_chain), symlinks=True)
    base = [store.path(base_chain)]
    first = RootPool(roots_dir(str(cache)), str(tmp_path / "scratch1"), store)
    second = RootPool(roots_dir(str(cache)), str(tmp_path / "scratch2"), store)
    for scratch in ("scratch1", "scratch2"):
        (tmp_path / scratch).mkdir()
    root = first.take(("sha256:base",), base, store.form, devices=True)
    (Path(root.path) / "d/b").write_text("changed by a RUN")
    upper = tmp_path / "upper"
    upper.mkdir()
    root.diff(str(upper), store.view(base))
    os.rename(upper, store.path(chain_ids(("sha256:base", "sha256:run"))[1]))
    root.diff_ids += ("sha256:run",)
    inode = os.lstat(root.path).st_ino
    first.give(root)
    again = second.take(("sha256:base",), base, store.form, devices=True)
    assert os.lstat(again.path).st_ino == inode
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    WorkingRoot(str(fresh), devices=True).extend(base, store.form, ("sha256:base",))
    assert tree_of(Path(again.path)) == tree_of(fresh)
    assert os.listdir(roots_dir(str(cache))) == []


def test_prune_removes_the_kept_roots_and_du_counts_them(snapshot, tmp_path):
    cache, scratch = tmp_path / "cache", tmp_path / "scratch"
    scratch.mkdir()
    store = SnapshotStore(str(cache))
    pool = RootPool(roots_dir(str(cache)), str(scratch), store)
    pool.give(pool.take(("sha256:base",), [str(snapshot)], store.form, devices=True))
    assert usage(str(cache)).roots_bytes >= len("alphabravocharlie")
    prune(str(cache))
    assert os.listdir(roots_dir(str(cache))) == []
    assert usage(str(cache)).roots_bytes == 0
