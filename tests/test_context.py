"""The build context walk and where its ignore file comes from."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from builder.sources import context
from builder.sources.context import ContextEntry, load_ignore, walk
from builder.sources.dockerignore import IgnoreMatcher, parse_dockerignore


def _tree(root: Path, *paths: str) -> None:
    """Files, or directories for paths ending in `/`."""
    for rel in paths:
        target = root / rel
        if rel.endswith("/"):
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(rel)


def _rels(root: Path, ignore: str = "") -> list[str]:
    return [e.rel for e in walk(str(root), IgnoreMatcher(parse_dockerignore(ignore)))]


def test_sorted_parents_first_by_component(tmp_path: Path) -> None:
    _tree(tmp_path, "b", "a/z", "a/b/c", "a-b", "a.b/x", "A", "empty/")
    # Component order, not string order: `a/...` sorts before `a-b` and `a.b`.
    assert _rels(tmp_path) == ["A", "a", "a/b", "a/b/c", "a/z", "a-b", "a.b", "a.b/x", "b",
                               "empty"]


def test_entries_carry_absolute_path_and_lstat(tmp_path: Path) -> None:
    _tree(tmp_path, "d/f")
    entries = list(walk(str(tmp_path), IgnoreMatcher()))
    assert [e.rel for e in entries] == ["d", "d/f"]
    f = entries[1]
    assert isinstance(f, ContextEntry)
    assert f.path == str(tmp_path / "d" / "f")
    assert stat.S_ISREG(f.stat.st_mode) and f.stat.st_size == 3
    assert stat.S_ISDIR(entries[0].stat.st_mode)


def test_symlinks_are_entries_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    _tree(outside, "secret")
    ctx = tmp_path / "ctx"
    _tree(ctx, "real/f")
    (ctx / "link_dir").symlink_to(outside)
    (ctx / "link_real").symlink_to("real")
    (ctx / "dangling").symlink_to("nowhere")
    entries = {e.rel: e for e in walk(str(ctx), IgnoreMatcher())}
    assert sorted(entries) == ["dangling", "link_dir", "link_real", "real", "real/f"]
    assert all(stat.S_ISLNK(entries[n].stat.st_mode) for n in ("dangling", "link_dir", "link_real"))


def test_exclusions_and_exceptions(tmp_path: Path) -> None:
    _tree(tmp_path, "app.py", "debug.log", "keep.log", "node_modules/x/index.js", "src/a.log")
    assert _rels(tmp_path, "*.log\n!keep.log\nnode_modules") == ["app.py", "keep.log", "src",
                                                                   "src/a.log"]


def test_excluded_subtree_is_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _tree(tmp_path, "build/deep/x", "build/keep", "other/y", "z")
    scanned = []
    real_scandir = os.scandir

    def recording_scandir(path: str):
        scanned.append(os.path.relpath(path, tmp_path))
        return real_scandir(path)

    monkeypatch.setattr(context.os, "scandir", recording_scandir)
    assert _rels(tmp_path, "build\nother\n!build/keep") == ["build", "build/keep", "z"]
    assert scanned == [".", "build"]  # build/deep and other are skipped unread


def test_unreadable_dir_is_an_error_unless_excluded(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    _tree(tmp_path, "locked/x", "open/y")
    real_scandir = os.scandir

    def scandir(path: str):
        if path.endswith("locked"):
            raise PermissionError(path)
        return real_scandir(path)

    monkeypatch.setattr(context.os, "scandir", scandir)
    assert _rels(tmp_path, "locked\n!**/keep") == ["open", "open/y"]
    with pytest.raises(PermissionError):
        _rels(tmp_path)


def test_wildcard_exception_forces_reading_excluded_dirs(tmp_path: Path) -> None:
    # fsutil stops skipping as soon as an exception is not literal, so `!**/cache/keep`
    # re-includes a file inside the excluded `build`.
    _tree(tmp_path, "build/cache/keep", "build/cache/other", "build/x")
    assert _rels(tmp_path, "build\n!**/cache/keep") == ["build", "build/cache",
                                                        "build/cache/keep"]


def test_excluded_parents_of_reincluded_files_are_yielded_with_their_own_stat(
        tmp_path: Path) -> None:
    _tree(tmp_path, "build/sub/keep", "build/sub/other", "build/empty/", "build/x")
    os.chmod(tmp_path / "build", 0o700)
    entries = list(walk(str(tmp_path), IgnoreMatcher(parse_dockerignore("build\n!build/sub/keep"))))
    assert [e.rel for e in entries] == ["build", "build/sub", "build/sub/keep"]
    assert stat.S_IMODE(entries[0].stat.st_mode) == 0o700


def test_excluded_dir_without_reincluded_content_is_left_out(tmp_path: Path) -> None:
    _tree(tmp_path, "build/x", "y")
    assert _rels(tmp_path, "build\n!build/not-there") == ["y"]


def test_dir_pattern_with_trailing_glob_keeps_the_dir(tmp_path: Path) -> None:
    _tree(tmp_path, "logs/a", "logs/b/c")
    assert _rels(tmp_path, "logs/**") == ["logs"]


def test_load_ignore_prefers_dockerfile_specific_file(tmp_path: Path) -> None:
    _tree(tmp_path, "Dockerfile")
    (tmp_path / ".dockerignore").write_text("a\n")
    assert load_ignore(str(tmp_path), None).excluded("a")
    (tmp_path / "Dockerfile.dockerignore").write_text("b\n")
    for dockerfile in (None, str(tmp_path / "Dockerfile")):
        matcher = load_ignore(str(tmp_path), dockerfile)
        assert matcher.excluded("b") and not matcher.excluded("a")


def test_load_ignore_beside_a_dockerfile_given_with_f(tmp_path: Path) -> None:
    ctx, elsewhere = tmp_path / "ctx", tmp_path / "elsewhere"
    _tree(ctx, "Dockerfile.dockerignore")
    _tree(elsewhere, "foo.Dockerfile")
    (ctx / ".dockerignore").write_text("a\n")
    (ctx / "Dockerfile.dockerignore").write_text("b\n")
    (elsewhere / "foo.Dockerfile.dockerignore").write_text("c\n")
    matcher = load_ignore(str(ctx), str(elsewhere / "foo.Dockerfile"))
    assert matcher.excluded("c") and not matcher.excluded("a") and not matcher.excluded("b")
    (elsewhere / "foo.Dockerfile.dockerignore").unlink()
    assert load_ignore(str(ctx), str(elsewhere / "foo.Dockerfile")).excluded("a")


def test_dockerfile_from_stdin_uses_only_dot_dockerignore(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text("a\n")
    (tmp_path / "Dockerfile.dockerignore").write_text("b\n")
    matcher = load_ignore(str(tmp_path), "-")
    assert matcher.excluded("a") and not matcher.excluded("b")


def test_empty_dockerfile_specific_file_still_wins(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text("a\n")
    (tmp_path / "Dockerfile.dockerignore").write_text("")
    assert not load_ignore(str(tmp_path), None).excluded("a")


def test_no_ignore_file_matches_nothing(tmp_path: Path) -> None:
    assert load_ignore(str(tmp_path), None).patterns == ()
