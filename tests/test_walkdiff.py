"""The walk diff of a working root (layers/walkdiff.py) against the records of the walk before:
what a change leaves in the upper directory, including the changes a size-and-mtime comparison
misses (content rewritten with the old mtime put back, in the same clock tick as the records)."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from layers.union import OVERLAY, UnionView
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
    for path in sorted(layer.rglob("*"), reverse=True):
        os.utime(path, ns=(MTIME, MTIME))
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
