"""COPY --parents, --exclude and --link, and COPY --from a later stage, built end to end and
checked against BuildKit's documented behaviour (Dockerfile reference, dockerfile:1.7+): Docker
20.10's built-in frontend knows none of these flags (`Unknown flag: link`), and it does not
build a later stage a COPY --from names, so it cannot be the oracle here."""
from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest

from tests.support import pybuild
from tests.test_cache import steps
from tests.test_copy_from_image import build, image_files, small_image


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def context(tmp_path: Path) -> Path:
    """x/y/{file,t.txt,z/deep.md}, a/{keep,drop.txt}, homefile.txt, homer."""
    root = tmp_path / "ctx"
    (root / "x" / "y" / "z").mkdir(parents=True)
    (root / "a").mkdir()
    for path, text in (("x/y/file", "1"), ("x/y/t.txt", "2"), ("x/y/z/deep.md", "3"),
                       ("a/keep", "4"), ("a/drop.txt", "5"), ("homefile.txt", "6"),
                       ("homer", "7")):
        (root / path).write_text(text)
    os.chmod(root / "x", 0o750)
    return root


def copied(context: Path, cache: Path, line: str) -> dict[str, tarfile.TarInfo]:
    """The entries one COPY puts under /d (a scratch image), by path below /d."""
    build(context, cache, dockerfile=f"FROM scratch\n{line}\n")
    files = image_files(context.parent / "image.tar")
    return {path[2:]: member for path, (member, _) in files.items() if path.startswith("d/")}


PARENTS = [  # (the COPY, the paths it writes below /d)
    ("COPY --parents x/y/file /d/", {"x", "x/y", "x/y/file"}),
    ("COPY --parents ./x/./y/file /d/", {"y", "y/file"}),
    ("COPY --parents x/./y/file /d/", {"y", "y/file"}),
    ("COPY --parents x/y/./file /d/", {"file"}),
    ("COPY --parents x/*/t.txt /d/", {"x", "x/y", "x/y/t.txt"}),
    ("COPY --parents ./x/./y /d/", {"y", "y/file", "y/t.txt", "y/z", "y/z/deep.md"}),
    ("COPY --parents x/y/file a/keep /d", {"x", "x/y", "x/y/file", "a", "a/keep"}),
    ("COPY --parents */keep /d/", {"a", "a/keep"}),
    ("COPY --parents ./*/./y/file /d/", {"y", "y/file"}),
    ("COPY --parents ./x/./*/z /d/", {"y", "y/z", "y/z/deep.md"}),
]


@pytest.mark.parametrize("line, paths", PARENTS)
def test_parents_keep_the_path_below_the_pivot(context, cache, line, paths) -> None:
    assert set(copied(context, cache, line)) == paths


def test_parents_are_copied_with_their_metadata(context, cache) -> None:
    """The directories between the pivot and a source come from the source (BuildKit copies
    them on the way to what its include pattern matches), --chown applied as to any."""
    entries = copied(context, cache, "COPY --parents --chown=7:8 x/y/file /d/")
    assert entries["x"].mode & 0o777 == 0o750
    assert {(e.uid, e.gid) for e in entries.values()} == {(7, 8)}


EXCLUDES = [  # (the COPY, the paths it writes below /d)
    ("COPY --exclude=*.txt hom* /d/", {"homer"}),
    ("COPY --exclude=*.txt --exclude=*er hom* /d/", set()),
    ("COPY --exclude=*.txt a x/y /d/", {"keep", "file", "z", "z/deep.md"}),
    ("COPY --exclude=z a x/y /d/", {"keep", "drop.txt", "file", "t.txt"}),
    ("COPY --exclude=**/*.md --exclude=a . /d/",
     {"x", "x/y", "x/y/file", "x/y/t.txt", "x/y/z", "homefile.txt", "homer", "Dockerfile"}),
    ("COPY --exclude=x --exclude=!x/y/file x /d/", {"y", "y/file", "y/t.txt", "y/z",
                                                    "y/z/deep.md"}),
    ("COPY --exclude=x/* --exclude=!x/y/file . /d/",
     {"x", "x/y", "x/y/file", "a", "a/keep", "a/drop.txt", "homefile.txt", "homer",
      "Dockerfile"}),
    ("COPY --parents --exclude=**/*.md x /d", {"x", "x/y", "x/y/file", "x/y/t.txt", "x/y/z"}),
    ("COPY --parents --exclude=y/t.txt ./x/./y /d/", {"y", "y/file", "y/z", "y/z/deep.md"}),
    ("COPY --parents --exclude=x/y/t.txt --exclude=y/z ./x/./y /d/", {"y", "y/file", "y/t.txt"}),
    ("ARG PATTERN=*.md\nCOPY --exclude=$PATTERN x/y/z /d/", set()),
    ("ADD --exclude=*.txt a /d/", {"keep"}),
]


@pytest.mark.parametrize("line, paths", EXCLUDES)
def test_exclude_patterns(context, cache, line, paths) -> None:
    """Patterns in .dockerignore syntax (`**`, `!` exceptions, a directory's contents with it),
    matched against the path an entry gets below the destination."""
    assert set(copied(context, cache, line)) == paths


def test_exclude_is_part_of_the_cache_key(context, cache) -> None:
    """A change to an excluded file reuses the step; one to a copied file, or another pattern,
    runs it again."""
    dockerfile = "FROM scratch\nCOPY --exclude=*.txt a /d/\n"
    assert steps(build(context, cache, dockerfile=dockerfile)) == ["no earlier build"]
    (context / "a" / "drop.txt").write_text("changed")
    assert steps(build(context, cache)) == ["CACHED"]
    (context / "a" / "keep").write_text("changed")
    assert steps(build(context, cache)) != ["CACHED"]
    assert steps(build(context, cache, dockerfile=dockerfile.replace("*.txt", "*.md"))) \
        == ["instruction changed"]


@pytest.mark.parametrize("line", ["COPY --exclude=[ a /d/", "COPY --exclude=a/[z-a] a /d/"])
def test_a_bad_exclude_pattern_fails_naming_the_line(context, cache, line) -> None:
    failed = build(context, cache, dockerfile=f"FROM scratch\n{line}\n", ok=False)
    assert failed.returncode == 1, failed.stderr
    assert "Dockerfile:2: COPY --exclude:" in failed.stderr, failed.stderr
    assert "Traceback" not in failed.stderr


def layers(tarball: Path) -> list[str]:
    with tarfile.open(tarball) as outer:
        return json.load(outer.extractfile("manifest.json"))[0]["Layers"]


def test_linked_copy_survives_a_changed_base(tmp_path, context, cache) -> None:
    """A different FROM image: the linked COPY is a cache hit and its layer the same blob; the
    unlinked COPY after it, and one not linked, run again."""
    for name, files in (("base-one", {"etc/one": b"1"}), ("base-two", {"etc/two": b"2"})):
        archive = small_image(tmp_path, files, f"{name}:1", name)
        assert pybuild("load", "-i", str(archive),
                       env={"PYBUILD_CACHE_DIR": str(cache)}).returncode == 0
    dockerfile = ("ARG BASE\nFROM $BASE\nCOPY --link x/y /opt/app/\nCOPY --link --chmod=600 "
                  "homer /opt/h\nADD --link a /opt/add/\nCOPY a /plain/\n")
    first = steps(build(context, cache, "--build-arg", "BASE=base-one:1", dockerfile=dockerfile))
    assert first == ["no earlier build"] * 4
    one = layers(context.parent / "image.tar")
    second = steps(build(context, cache, "--build-arg", "BASE=base-two:1"))
    two = layers(context.parent / "image.tar")
    assert second == ["CACHED"] * 3 + ["an earlier step changed"]
    assert one[1:4] == two[1:4] and one[0] != two[0]
    files = image_files(context.parent / "image.tar")
    assert "etc/two" in files and "etc/one" not in files and files["opt/h"][1] == b"7"
    assert files["opt/h"][0].mode & 0o777 == 0o600


def test_a_linked_copy_does_not_follow_the_base(context, cache) -> None:
    """The base's /opt is a symlink: a linked COPY makes /opt a directory of its own (created
    0755 root), as BuildKit documents: its layer depends on nothing below it."""
    (context / "base").mkdir()
    (context / "base" / "usr").mkdir(mode=0o700)
    os.symlink("usr", context / "base" / "opt")
    stages = "FROM scratch AS base\nCOPY base/ /\nFROM base\n"
    build(context, cache, dockerfile=stages + "COPY --link x/y/file /opt/app/\n")
    files = image_files(context.parent / "image.tar")
    assert files["opt"][0].isdir() and "opt/app/file" in files and "usr/app" not in files
    assert (files["opt"][0].mode & 0o777, files["opt"][0].uid) == (0o755, 0)


def test_linked_copy_keys_on_what_it_expands(context, cache) -> None:
    """The linked step's key has its words expanded (WORKDIR, ENV, ARG): a changed value that
    reaches it runs it again; one that does not, leaves it cached."""
    dockerfile = "FROM scratch\nENV D=one\nWORKDIR /w\nCOPY --link homer $D/\n"
    build(context, cache, dockerfile=dockerfile)
    assert steps(build(context, cache, dockerfile=dockerfile.replace("ENV D=one",
                                                                     "ENV D=one E=2")))[-1] \
        == "CACHED"
    assert steps(build(context, cache, dockerfile=dockerfile.replace("D=one", "D=two")))[-1] \
        != "CACHED"
    assert "w/two/homer" in image_files(context.parent / "image.tar")


STAGES = [  # (the Dockerfile's lines after `FROM scratch AS main`, exit status, message)
    ("COPY --from=later /f /f\nFROM scratch AS later\nCOPY homer /f", 0, ""),
    ("COPY --from=1 /f /f\nFROM scratch AS later\nCOPY homer /f", 0, ""),
    ("COPY --from=later /f /f\nFROM scratch AS later\nCOPY --from=main /f /g", 1,
     "Dockerfile:4: COPY --from=main: circular dependency detected on stage main "
     "(building main -> later)"),
    ("COPY --from=b /f /f\nFROM scratch AS a\nCOPY --from=main /f /f\nFROM scratch AS b\n"
     "COPY --from=a /f /f", 1, "circular dependency detected on stage"),
    ("COPY --from=2 /f /f\nFROM scratch", 1, "COPY --from=2: invalid stage index"),
]


@pytest.mark.parametrize("lines, status, message", STAGES)
def test_copy_from_a_later_stage(context, cache, lines, status, message) -> None:
    """BuildKit builds a later stage COPY --from names first; a cycle is an error naming the
    COPY where it closes."""
    result = build(context, cache, "--target", "main",
                   dockerfile=f"FROM scratch AS main\n{lines}\n", ok=False)
    assert result.returncode == status, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    if status == 0:
        assert image_files(context.parent / "image.tar")["f"][1] == b"7"


def test_from_names_no_stage_by_index(tmp_path, context, cache) -> None:
    """`FROM 0` is the image `0` (here loaded into the store), as in BuildKit: only COPY --from
    and mounts take an index."""
    archive = small_image(tmp_path, {"from-image": b"i"}, "0:latest", "zero")
    assert pybuild("load", "-i", str(archive),
                   env={"PYBUILD_CACHE_DIR": str(cache)}).returncode == 0
    build(context, cache, dockerfile="FROM scratch\nCOPY homer /\nFROM 0\n")
    files = image_files(context.parent / "image.tar")
    assert "from-image" in files and "homer" not in files
