"""builder/copy.py:plan_layer: the entries of a COPY's layer from resolved sources, by Docker's
destination rules, before anything is written."""
from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from builder.steps.copy import TarSource, CopySpec, DataSource, TreeSource, plan_layer, write_layer
from builder.sources.tree import Found, resolve
from builder.steps.users import Owner
from layers.errors import LayerError
from layers.tarwriter import Kind, LayerWriter
from layers.union import UnionView
from tests.unit.trees import context, write_tree

FILES = {"a.txt": "a", "src/x.py": "x", "src/lib/y.py": "yy", "link": "-> a.txt"}


def spec(dest: str, dest_is_dir: bool = False, **changes) -> CopySpec:
    return CopySpec(**{"dest": dest, "dest_is_dir": dest_is_dir, "owner": None, "chmod": None,
                       "keep_owner": False, "now": 1000, **changes})


def sources(tree, *paths: str) -> list[TreeSource]:
    return [TreeSource(tree, resolve(tree, p, confined=True)) for p in paths]


def paths(entries: dict) -> dict[str, str]:
    return {path: entry.kind.name for path, (entry, _) in sorted(entries.items())}


@pytest.mark.parametrize("names, dest, dest_is_dir, image, expected", [
    (["a.txt"], "/b.txt", False, {}, {"b.txt": "FILE"}),
    (["a.txt"], "/out/", True, {}, {"out": "DIR", "out/a.txt": "FILE"}),
    (["a.txt"], "/out", False, {"out": None}, {"out": "DIR", "out/a.txt": "FILE"}),
    (["a.txt"], "/deep/er/b", False, {}, {"deep": "DIR", "deep/er": "DIR", "deep/er/b": "FILE"}),
    (["src"], "/app", False, {}, {"app": "DIR", "app/x.py": "FILE", "app/lib": "DIR",
                                  "app/lib/y.py": "FILE"}),
    (["src/lib", "a.txt"], "/app/", True, {}, {"app": "DIR", "app/y.py": "FILE",
                                              "app/a.txt": "FILE"}),
    ([""], "/", True, {}, {"a.txt": "FILE", "src": "DIR", "src/x.py": "FILE", "src/lib": "DIR",
                           "src/lib/y.py": "FILE", "link": "SYMLINK"}),
])
def test_destination_rules(tmp_path: Path, names: list[str], dest: str, dest_is_dir: bool,
                           image: dict, expected: dict) -> None:
    """A directory source copies its contents; a file lands under its own name in a directory
    (named with `/` or one in the image), else at the destination; parents are added."""
    tree = context(tmp_path / "ctx", FILES)
    view = UnionView([str(write_tree(tmp_path / "image", image))])
    assert paths(plan_layer(sources(tree, *names), spec(dest, dest_is_dir), view)) == expected


LINKED = {"usr": None, "usr/share": None, "deep/er": None, "opt": "-> usr", "chain": "-> opt",
          "abs": "-> /usr/share", "deep/er/up": "-> ../../../../usr", "dangling": "-> /no/dir",
          "file": "-> /usr/f", "loop": "-> /loop/x"}


@pytest.mark.parametrize("dest, dest_is_dir, expected", [
    ("/opt/app/", True, {"usr": "DIR", "usr/app": "DIR", "usr/app/a.txt": "FILE"}),
    ("/chain/c/", True, {"usr": "DIR", "usr/c": "DIR", "usr/c/a.txt": "FILE"}),
    ("/abs/s/", True, {"usr": "DIR", "usr/share": "DIR", "usr/share/s": "DIR",
                       "usr/share/s/a.txt": "FILE"}),
    ("/deep/er/up/", True, {"usr": "DIR", "usr/a.txt": "FILE"}),
    ("/opt", False, {"usr": "DIR", "usr/a.txt": "FILE"}),
    ("/dangling/n/", True, {"no": "DIR", "no/dir": "DIR", "no/dir/n": "DIR",
                            "no/dir/n/a.txt": "FILE"}),
    ("/file", False, {"usr": "DIR", "usr/f": "FILE"}),
])
def test_the_destination_follows_the_images_symlinks(tmp_path: Path, dest: str,
                                                     dest_is_dir: bool, expected: dict) -> None:
    """As Docker: every link on the way, the last one too, inside the image's root (`..`
    stopping there); a link to a missing path leads to that path, created."""
    tree = context(tmp_path / "ctx", FILES)
    view = UnionView([str(write_tree(tmp_path / "image", LINKED))])
    assert paths(plan_layer(sources(tree, "a.txt"), spec(dest, dest_is_dir), view)) == expected


def test_a_symlink_loop_on_the_way_to_the_destination_is_refused(tmp_path: Path) -> None:
    tree = context(tmp_path / "ctx", FILES)
    view = UnionView([str(write_tree(tmp_path / "image", LINKED))])
    with pytest.raises(LayerError, match="^/loop/a: too many levels of symbolic links$"):
        plan_layer(sources(tree, "a.txt"), spec("/loop/a"), view)


def test_files_are_owned_by_root_or_the_chown_owner_with_their_mode_or_chmod(
        tmp_path: Path) -> None:
    tree = context(tmp_path / "ctx", FILES)
    os.chmod(tmp_path / "ctx" / "a.txt", 0o600)
    view = UnionView([])
    plain = plan_layer(sources(tree, "a.txt"), spec("/a"), view)["a"]
    owned = plan_layer(sources(tree, "a.txt"), spec("/a", owner=Owner(5, 6), chmod=0o755),
                       view)["a"]
    assert (plain[0].uid, plain[0].gid, plain[0].mode & 0o777) == (0, 0, 0o600)
    assert (owned[0].uid, owned[0].gid, owned[0].mode & 0o777) == (5, 6, 0o755)
    assert plain[1] == str(tmp_path / "ctx" / "a.txt"), "the body is read from the host path"
    assert plain[0].size == 1


def test_created_parents_get_0755_and_the_owner_existing_ones_keep_theirs(
        tmp_path: Path) -> None:
    tree = context(tmp_path / "ctx", FILES)
    image = write_tree(tmp_path / "image", {"usr": None})
    os.chmod(image / "usr", 0o750)
    entries = plan_layer(sources(tree, "a.txt"), spec("/usr/new/a", owner=Owner(7, 7)),
                         UnionView([str(image)]))
    created, kept = entries["usr/new"][0], entries["usr"][0]
    assert (created.mode, created.uid, created.mtime) == (0o755, 7, 1000)
    assert (kept.mode & 0o777, kept.uid) == (0o750, os.getuid())


def test_a_heredoc_is_a_file_of_its_text(tmp_path: Path) -> None:
    entries = plan_layer([DataSource("run.sh", b"echo hi\n")], spec("/bin/", True,
                                                                     chmod=0o755), UnionView([]))
    entry, body = entries["bin/run.sh"]
    assert (entry.kind, entry.mode, entry.size, body, entry.mtime) == (
        Kind.FILE, 0o755, 8, b"echo hi\n", 1000)


def test_a_later_source_wins(tmp_path: Path) -> None:
    entries = plan_layer([DataSource("a", b"1"), DataSource("a", b"22")], spec("/d/", True),
                         UnionView([]))
    assert entries["d/a"][1] == b"22"


def test_hardlinks_within_one_source_stay_links_across_sources_they_do_not(
        tmp_path: Path) -> None:
    tree = context(tmp_path / "ctx", {"d/one": "same", "e/x": "x"})
    os.link(tmp_path / "ctx" / "d" / "one", tmp_path / "ctx" / "d" / "two")
    os.link(tmp_path / "ctx" / "d" / "one", tmp_path / "ctx" / "e" / "three")
    entries = plan_layer(sources(tree, "d", "e"), spec("/out/", True), UnionView([]))
    assert entries["out/one"][0].kind is Kind.FILE
    assert (entries["out/two"][0].kind, entries["out/two"][0].linkname) == (Kind.HARDLINK,
                                                                          "out/one")
    assert entries["out/three"][0].kind is Kind.FILE


def test_a_named_fifo_cannot_be_copied_one_inside_a_directory_is_left_out(
        tmp_path: Path) -> None:
    tree = context(tmp_path / "ctx", {"d/file": "f"})
    os.mkfifo(tmp_path / "ctx" / "d" / "pipe")
    assert "out/pipe" not in plan_layer(sources(tree, "d"), spec("/out"), UnionView([]))
    with pytest.raises(LayerError, match="d/pipe: a named pipe \\(FIFO\\) cannot be copied"):
        plan_layer(sources(tree, "d/pipe"), spec("/p"), UnionView([]))


def test_a_followed_symlink_keeps_its_own_name(tmp_path: Path) -> None:
    tree = context(tmp_path / "ctx", FILES)
    found = resolve(tree, "link", confined=True)
    assert isinstance(found, Found) and found.rel == "a.txt"
    entries = plan_layer([TreeSource(tree, found, "link")], spec("/out/", True), UnionView([]))
    assert paths(entries) == {"out": "DIR", "out/link": "FILE"}


def archive(*members: tuple[str, bytes | tarfile.TarInfo]) -> tarfile.TarFile:
    """An in-memory tar of (name, content) files or ready TarInfo entries."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, content in members:
            if isinstance(content, tarfile.TarInfo):
                tar.addfile(content)
            else:
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.uid = len(content), 0o640, 9
                tar.addfile(info, io.BytesIO(content))
    buffer.seek(0)
    return tarfile.open(fileobj=buffer)


def info(name: str, kind: bytes, **fields) -> tarfile.TarInfo:
    made = tarfile.TarInfo(name)
    made.type = kind
    for key, value in fields.items():
        setattr(made, key, value)
    return made


def test_an_archive_is_extracted_under_the_destination_as_it_says() -> None:
    tar = archive(("./pkg/bin/tool", b"tool"), ("pkg/link", info("pkg/link", tarfile.LNKTYPE,
                                                                   linkname="pkg/bin/tool")),
                  ("pkg/sym", info("pkg/sym", tarfile.SYMTYPE, linkname="bin/tool")))
    entries = plan_layer([TarSource(tar)], spec("/opt"), UnionView([]))
    assert paths(entries) == {"opt": "DIR", "opt/pkg": "DIR", "opt/pkg/bin": "DIR",
                              "opt/pkg/bin/tool": "FILE", "opt/pkg/link": "HARDLINK",
                              "opt/pkg/sym": "SYMLINK"}
    tool, body = entries["opt/pkg/bin/tool"]
    assert (tool.mode, tool.uid, tool.size) == (0o640, 9, 4) and body().read() == b"tool"
    assert entries["opt/pkg/link"][0].linkname == "opt/pkg/bin/tool"


@pytest.mark.parametrize("member, message", [
    (("../escape", b"x"), "climbs out of the destination"),
    (("a/../../escape", b"x"), "climbs out of the destination"),
    (("dir/.wh.file", b""), "whiteouts in an image layer"),
    (("link", info("link", tarfile.LNKTYPE, linkname="nothing")), "not an earlier file"),
    (("dev", info("dev", tarfile.CHRTYPE, devmajor=0, devminor=0)), "character device 0:0"),
])
def test_an_archive_may_not_write_outside_or_what_an_image_cannot_hold(member,
                                                                       message: str) -> None:
    with pytest.raises(LayerError, match=message):
        plan_layer([TarSource(archive(member))], spec("/opt"), UnionView([]))


def test_the_layer_is_written_in_tar_order_hashing_the_files_asked_for(tmp_path: Path) -> None:
    tree = context(tmp_path / "ctx", FILES)
    entries = plan_layer(sources(tree, "src", "a.txt"), spec("/app/", True), UnionView([]))
    out = io.BytesIO()
    writer = LayerWriter(out)
    host = str(tmp_path / "ctx" / "a.txt")
    hashes = write_layer(entries, writer, frozenset({host}))
    writer.finish()
    out.seek(0)
    with tarfile.open(fileobj=out) as tar:
        assert [(m.name, m.size) for m in tar.getmembers()] == [
            ("app", 0), ("app/a.txt", 1), ("app/lib", 0), ("app/lib/y.py", 2), ("app/x.py", 1)]
    assert hashes[host].hexdigest() == hashlib.sha256(b"a").hexdigest()
