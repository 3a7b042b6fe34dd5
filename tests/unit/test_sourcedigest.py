"""builder/sourcedigest.py: the manifest of what a COPY reads (its digest is the step's
`sources` input), the per-file memo that spares reading an unchanged context, the lstat
signature that spares even the memo, and how a change between two manifests is told."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from builder.steps.copy import CopySpec, DataSource, TreeSource
from builder.cache.sources import SourceScan, describe_change, manifest, scan, signature
from builder.sources.tree import StageTree, resolve
from builder.steps.files import CopySelection
from layers.union import UnionView
from tests.unit.trees import context, write_tree

FILES = {"src/a.py": "aaa", "src/b.py": "b", "src/link": "-> a.py", "top.txt": "t"}


def selection(tree, *paths: str, chmod: int | None = None) -> CopySelection:
    spec = CopySpec("/d", True, None, chmod, False, 0)
    return CopySelection(tuple(TreeSource(tree, resolve(tree, p, confined=True))
                               for p in paths), spec, None, False)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_rows_cover_paths_types_modes_sizes_links_and_contents(tmp_path: Path) -> None:
    tree = context(tmp_path, FILES)
    for path, mode in (("src", 0o755), ("src/a.py", 0o644), ("src/b.py", 0o640)):
        os.chmod(tmp_path / path, mode)
    found = scan(selection(tree, "src"), {})
    found.fill({})
    assert found.rows == [
        ["src", "d", 0o755, 0, "", ""],
        ["src/a.py", "f", 0o644, 3, "", sha("aaa")],
        ["src/b.py", "f", 0o640, 1, "", sha("b")],
        ["src/link", "l", None, 0, "a.py", ""],
    ]
    assert (found.total_bytes, found.unknown_bytes) == (4, 4)


def test_with_chmod_the_modes_do_not_enter(tmp_path: Path) -> None:
    tree = context(tmp_path, FILES)
    rows = scan(selection(tree, "top.txt", chmod=0o600), {}).rows
    assert rows == [["top.txt", "f", None, 1, "", ""]]


def test_heredocs_and_other_stages_files(tmp_path: Path) -> None:
    stage = StageTree(UnionView([str(write_tree(tmp_path / "stage", {"bin/tool": "t"}))]))
    spec = CopySpec("/d", True, None, None, False, 0)
    chosen = CopySelection((DataSource("run.sh", b"hi"),
                            TreeSource(stage, resolve(stage, "bin/tool", confined=False))),
                           spec, "builder", False)
    assert scan(chosen, {}).rows == [["<<run.sh", "data", None, 2, "", sha("hi")],
                                     ["bin/tool", "stage", None, 0, "", ""]]
    assert signature(chosen) is None, "only context files have an lstat signature"


def test_the_memo_supplies_digests_of_unchanged_files_and_learns_new_ones(tmp_path: Path) -> None:
    tree = context(tmp_path, FILES)
    first = scan(selection(tree, "src"), {})
    learned = dict(first.fill({}))
    assert sorted(learned) == [str(tmp_path / "src" / "a.py"), str(tmp_path / "src" / "b.py")]
    again = scan(selection(tree, "src"), {path: tuple(memo) for path, memo in learned.items()})
    assert again.unknown == [] and again.rows == first.rows
    os.utime(tmp_path / "src" / "b.py", ns=(1, 1))
    edited = scan(selection(context(tmp_path, {}), "src"),
                  {path: tuple(memo) for path, memo in learned.items()})
    assert [found.rel for _, found in edited.unknown] == ["src/b.py"]


def test_the_digests_given_are_used_instead_of_reading(tmp_path: Path) -> None:
    tree = context(tmp_path, FILES)
    found = scan(selection(tree, "top.txt"), {})
    found.fill({str(tmp_path / "top.txt"): "given"})
    assert found.rows[0][5] == "given"


@pytest.mark.parametrize("unknown, total, cheap", [
    (0, 0, True), (8 << 20, 8 << 20, True), ((8 << 20) + 1, 100 << 20, True),
    (11 << 20, 100 << 20, False), (200 << 20, 2000 << 20, True), (201 << 20, 2000 << 20, False),
])
def test_hash_first_only_when_little_is_unknown(unknown: int, total: int, cheap: bool) -> None:
    assert SourceScan([], [], unknown, total).cheap_to_hash_first() is cheap


def test_the_signature_changes_with_any_lstat_the_memo_trusts(tmp_path: Path) -> None:
    tree = context(tmp_path, FILES)
    before = signature(selection(tree, "src"))
    assert before == signature(selection(context(tmp_path, {}), "src"))
    assert before != signature(selection(tree, "src", chmod=0o644))
    assert before != signature(selection(tree, "top.txt"))
    (tmp_path / "src" / "b.py").write_text("B")
    assert before != signature(selection(context(tmp_path, {}), "src"))


def test_a_manifest_digest_is_that_of_its_json_text() -> None:
    rows = [["a", "f", 420, 1, "", "x"]]
    digest, text = manifest(rows)
    assert text == '[["a","f",420,1,"","x"]]'
    assert digest == "sha256:" + sha(text)
    assert manifest([["a", "f", 420, 1, "", "y"]])[0] != digest


F = ["a", "f", 0o644, 1, "", "x"]


@pytest.mark.parametrize("old, new, said", [
    (None, [F], "the copied files changed"),
    ([F], [F, ["b", "f", 0o644, 1, "", "y"]], "b added"),
    ([F, ["b", "f", 0o644, 1, "", "y"]], [F], "b removed"),
    ([F], [["a", "f", 0o644, 1, "", "z"]], "a changed"),
    ([F], [["a", "f", 0o644, 2, "", "x"]], "a changed"),
    ([F], [["a", "f", 0o755, 1, "", "x"]], "mode of a changed"),
    ([F], [["a", "l", None, 0, "t", ""]], "a changed type"),
    ([["b", "f", 0, 0, "", "1"], ["c", "f", 0, 0, "", "1"]],
     [["b", "f", 0, 0, "", "2"], ["c", "f", 0, 0, "", "2"]], "b changed"),
    ([F], [F], "the copied files changed"),
])
def test_the_first_difference_between_manifests_in_words(old, new, said: str) -> None:
    assert describe_change(old, new) == said
