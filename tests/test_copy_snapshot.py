"""COPY's snapshot unpacked while its layer is written (builder/session.py commit_layer,
layers/streamunpack.py WrittenSnapshot): the same tree a later unpack of the stored layer makes,
kept under the layer's chain ID, and nothing left behind when the COPY or the unpack fails."""
from __future__ import annotations

import io
import json
import os
import stat
import tarfile
from pathlib import Path

import pytest

from builder.progress.sinks import Log
from builder.request import BuildRequest
from builder.session import BuildSession
from builder.sources.tree import resolve
from builder.steps.copy import CopySpec, TreeSource, plan_layer, write_layer
from builder.steps.users import Owner
from layers.errors import LayerError
from layers.image import chain_ids
from layers.scratch import private_dir
from layers.tarwriter import Entry, Kind
from layers.union import UnionView
from tests.support import busybox_base, pybuild, require
from tests.unit.trees import context

FILES = {"top.txt": "top", "empty": None, "deep/er/empty": None, "deep/file": "deep",
         "deep/link": "-> ../top.txt", "abs": "-> /etc/passwd", "dangling": "-> nowhere"}
COPIES = [  # (owner, chmod)
    pytest.param(None, None, id="as the context has it"),
    pytest.param(Owner(12, 34), 0o750, id="--chown=12:34 --chmod=750"),
]


def as_root() -> None:
    """Only root unpacks while writing, as `pybuild load` (a rootless build is root in its user
    namespace)."""
    require(os.geteuid() == 0, "root")


def make_context(root: Path):
    """FILES, plus a file with two more hard links, modes and a setgid directory."""
    tree = context(root, FILES)
    os.link(root / "top.txt", root / "deep/hard")
    os.link(root / "top.txt", root / "deep/er/hard2")
    os.chmod(root / "top.txt", 0o604)
    os.chmod(root / "deep/er", 0o2751)
    os.utime(root / "deep/file", ns=(1_500_000_000_123, 1_500_000_000_123))
    return tree


def tree_of(root: str) -> dict[str, tuple]:
    """Every entry below `root` (not the root itself: its times are the unpack's): type and
    mode, owner, mtime (not a symlink's), content or link target, the first path of its hard
    link group, xattrs."""
    found, first = {}, {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            regular, link = stat.S_ISREG(st.st_mode), stat.S_ISLNK(st.st_mode)
            rel = os.path.relpath(path, root)
            found[rel] = (st.st_mode, st.st_uid, st.st_gid, None if link else st.st_mtime_ns,
                          Path(path).read_bytes() if regular else
                          os.readlink(path) if link else None,
                          first.setdefault(st.st_ino, rel) if regular and st.st_nlink > 1
                          else None,
                          sorted(os.listxattr(path, follow_symlinks=False)))
    return dict(sorted(found.items()))


def session(tmp_path: Path) -> BuildSession:
    return BuildSession(BuildRequest(context=str(tmp_path), cache_dir=str(tmp_path / "cache")),
                        Log())


def leftovers(made: BuildSession) -> list[str]:
    """Snapshot temp directories and blob temp files of the session's process."""
    return [name for name in os.listdir(private_dir(made.request.cache_dir))
            if name.startswith(("snapshot-", "blob-"))]


def unpacked_from_blob(made: BuildSession, diff_id: str) -> str:
    temp = made.snapshots.temp()
    with open(made.blobs.path(diff_id), "rb") as layer:
        made.snapshots.unpack(layer, temp, diff_id)
    return temp


@pytest.mark.parametrize("owner, chmod", COPIES)
def test_the_snapshot_written_is_the_one_unpacked_from_the_layer(tmp_path: Path, owner,
                                                                 chmod) -> None:
    as_root()
    tree = make_context(tmp_path / "ctx")
    spec = CopySpec(dest="/app", dest_is_dir=True, owner=owner, chmod=chmod, keep_owner=False,
                    now=1_700_000_000)
    entries = plan_layer([TreeSource(tree, resolve(tree, "", confined=True))], spec,
                         UnionView([]))
    made = session(tmp_path)
    below = ("sha256:" + "1" * 64,)
    diff_id = made.commit_layer(lambda writer: write_layer(entries, writer), below=below)
    snapshot = made.snapshots.path(chain_ids(below + (diff_id,))[-1])
    assert os.path.isdir(snapshot)
    written = tree_of(snapshot)
    assert written["app/deep/hard"][5] == written["app/deep/er/hard2"][5] is not None
    assert stat.S_IMODE(os.stat(snapshot).st_mode) == 0o755
    assert leftovers(made) == []
    assert written == tree_of(unpacked_from_blob(made, diff_id))


def test_no_snapshot_is_made_without_the_layers_below(tmp_path: Path) -> None:
    """A layer no later step reads (commit_layer without `below`) is only stored."""
    made = session(tmp_path)
    made.commit_layer(lambda writer: writer.add(Entry("f", Kind.FILE, 0o644, size=1), b"x"))
    assert os.listdir(made.snapshots.dir) == []
    assert leftovers(made) == []


def test_a_failing_copy_leaves_no_snapshot(tmp_path: Path) -> None:
    as_root()
    made = session(tmp_path)

    def write(writer) -> None:
        writer.add(Entry("big", Kind.FILE, 0o644, size=8 << 20), os.urandom(8 << 20))
        writer.add(Entry("shrunk", Kind.FILE, 0o644, size=10), str(tmp_path / "short"))

    (tmp_path / "short").write_text("short")
    with pytest.raises(LayerError, match="shrank"):
        made.commit_layer(write, below=())
    assert os.listdir(made.snapshots.dir) == []
    assert leftovers(made) == []


def test_an_unpack_that_fails_fails_nothing(tmp_path: Path) -> None:
    """A layer the unpacker refuses (a hard link to nothing of it) is stored all the same,
    without a snapshot: the step that needs its files unpacks it and says why it cannot."""
    as_root()
    made = session(tmp_path)
    diff_id = made.commit_layer(
        lambda writer: writer.add(Entry("link", Kind.HARDLINK, 0o644, linkname="missing")),
        below=())
    assert made.blobs.has(diff_id)
    assert os.listdir(made.snapshots.dir) == []
    assert leftovers(made) == []


def test_a_copy_then_run_unpacks_nothing(tmp_path: Path) -> None:
    """End to end: the RUN after each COPY (plain, --chown/--chmod, --link) finds the COPY's
    snapshot made, the one an unpack of the stored layer makes; the log has no unpack step."""
    as_root()
    base = busybox_base(tmp_path)
    cache = tmp_path / "cache"
    env = {"PYBUILD_CACHE_DIR": str(cache), "SOURCE_DATE_EPOCH": "1700000000"}
    assert pybuild("load", "-i", str(base), env=env).returncode == 0
    make_context(tmp_path / "ctx")
    (tmp_path / "ctx" / "Dockerfile").write_text(
        "FROM busybox:test\nCOPY . /app\nRUN test \"$(cat /app/deep/hard)\" = top\n"
        "COPY --chown=12:34 --chmod=750 deep /d\nRUN stat -c %u:%g:%a /d/file > /owner\n"
        "COPY --link top.txt /linked/\nRUN cat /linked/top.txt\n")
    result = pybuild("--progress", "plain", "-o", str(tmp_path / "image.tar"),
                     str(tmp_path / "ctx"), env=env)
    assert result.returncode == 0, result.stderr
    assert "unpacking" not in result.stderr
    made = session(tmp_path)
    with tarfile.open(tmp_path / "image.tar") as tar:
        manifest = json.load(tar.extractfile("manifest.json"))[0]
        config = json.load(tar.extractfile(manifest["Config"]))
    diff_ids = tuple(config["rootfs"]["diff_ids"])
    layered = [entry["created_by"] for entry in config["history"]
               if not entry.get("empty_layer")]
    copies = [(diff_id, chain) for created_by, diff_id, chain
              in zip(layered, diff_ids, chain_ids(diff_ids), strict=True) if "COPY" in created_by]
    assert len(copies) == 3
    for diff_id, chain in copies:
        assert tree_of(made.snapshots.path(chain)) == tree_of(unpacked_from_blob(made, diff_id))


READERS = [  # (Dockerfile, how many of its COPY layers get a snapshot as they are written)
    pytest.param("FROM scratch\nCOPY a /a\n", 0, id="the target's last step: read by nothing"),
    pytest.param("FROM scratch\nCOPY a /a\nCOPY a /b\n", 1, id="read by the next COPY"),
    pytest.param("FROM scratch\nCOPY a /a\nCOPY --link a /b\n", 0,
                 id="a COPY --link reads nothing below it"),
    pytest.param("FROM scratch\nCOPY a /a\nWORKDIR /w\n", 1, id="read by WORKDIR"),
    pytest.param("FROM scratch AS s\nCOPY a /a\nFROM scratch\nCOPY --from=s /a /b\n", 1,
                 id="read by another stage"),
]


@pytest.mark.parametrize("dockerfile, snapshotted", READERS)
def test_a_snapshot_is_made_only_for_a_layer_read_later(tmp_path: Path, dockerfile: str,
                                                        snapshotted: int) -> None:
    """No RUN needed: a later COPY (not --link), a WORKDIR or another stage read the image's
    files too; what nothing reads gets no snapshot, and none is unpacked after the fact."""
    as_root()
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "a").write_text("a")
    (tmp_path / "ctx" / "Dockerfile").write_text(dockerfile)
    result = pybuild("--progress", "plain", "-o", str(tmp_path / "image.tar"),
                     str(tmp_path / "ctx"), env={"PYBUILD_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr
    assert "unpacking" not in result.stderr
    made = session(tmp_path)
    assert len(os.listdir(made.snapshots.dir)) == snapshotted


def test_under_no_cache_a_copy_whose_snapshot_is_at_hand_does_not_unpack_it_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--no-cache runs every step again; a COPY whose earlier layer's snapshot is here skips the
    unpack on the way (it would be thrown away), and one whose files changed still makes its
    snapshot while written."""
    from builder.api import build
    from builder.progress.sinks import JsonSink
    as_root()
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "a").write_text("a")
    streamed: list[bool] = []
    commit_layer = BuildSession.commit_layer

    def recorded(self, write, below=None):
        streamed.append(below is not None)
        return commit_layer(self, write, below)
    monkeypatch.setattr(BuildSession, "commit_layer", recorded)

    def built(no_cache: bool) -> list[bool]:
        streamed.clear()
        build(BuildRequest(context=str(tmp_path / "ctx"), output=str(tmp_path / "image.tar"),
                           dockerfile_text="FROM scratch\nCOPY a /a\nCOPY a /b\n",
                           cache_dir=str(tmp_path / "cache"), no_cache=no_cache),
              JsonSink(io.StringIO()))
        return list(streamed)

    assert built(no_cache=False) == [True, False], "the first COPY is read by the second"
    assert built(no_cache=True) == [False, False]
    (tmp_path / "ctx" / "a").write_text("changed")
    assert built(no_cache=True) == [True, False]
    with tarfile.open(tmp_path / "image.tar") as tar:
        manifest = json.load(tar.extractfile("manifest.json"))[0]
        layers = [tar.extractfile(name).read() for name in manifest["Layers"]]
    assert all(b"changed" in layer for layer in layers)
    assert len(os.listdir(session(tmp_path).snapshots.dir)) == 2, "the old one, and the new"
