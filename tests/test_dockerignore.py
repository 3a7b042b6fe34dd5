"""`.dockerignore` semantics, driven by testdata/dockerignore/cases.txt (format in its header)."""
from __future__ import annotations

from pathlib import Path

import pytest

from builder.sources.dockerignore import IgnoreMatcher, parse_dockerignore

CASES = Path(__file__).parent.parent / "testdata" / "dockerignore" / "cases.txt"


def _cases() -> list:
    params = []
    for number, line in enumerate(CASES.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        check, path, expect, patterns = (field.strip() for field in line.split("|", 3))
        lines = [p.strip().replace("␠", " ").replace("␉", "\t") for p in patterns.split(";")]
        params.append(pytest.param(check, path, expect == "yes", "\n".join(lines),
                                   id=f"line{number}-{check}-{path}"))
    return params


@pytest.mark.parametrize("check,path,expected,text", _cases())
def test_case(check: str, path: str, expected: bool, text: str) -> None:
    if check == "error":
        with pytest.raises(ValueError):
            parse_dockerignore(text)
        return
    matcher = IgnoreMatcher(parse_dockerignore(text))
    if check == "excluded":
        assert matcher.excluded(path) is expected
    else:
        assert check == "may_skip"
        assert matcher.may_skip_dir(path) is expected


def test_table_is_large() -> None:
    assert len(_cases()) >= 50


def test_patterns_are_cleaned_and_split_from_their_bang() -> None:
    patterns = parse_dockerignore("# c\n\n /a/./b/ \n! ../c\n**/x\n")
    assert [(p.text, p.exception) for p in patterns] == [("a/b", False), ("../c", True),
                                                         ("**/x", False)]


def test_bom_and_crlf() -> None:
    patterns = parse_dockerignore("\ufeff# comment\r\nfoo\r\n")
    assert [p.text for p in patterns] == ["foo"]
    assert IgnoreMatcher(patterns).excluded("foo")


def test_bom_only_on_the_first_line() -> None:
    assert [p.text for p in parse_dockerignore("a\n\ufeff#b")] == ["a", "\ufeff#b"]


def test_no_patterns_exclude_nothing() -> None:
    matcher = IgnoreMatcher()
    assert not matcher.excluded("anything/at/all")
    assert not matcher.may_skip_dir("anything")


def test_the_context_root_is_never_excluded() -> None:
    matcher = IgnoreMatcher(parse_dockerignore("*\n**\n."))
    assert not matcher.excluded(".")
    assert not matcher.excluded("")


def test_match_threads_parent_state() -> None:
    matcher = IgnoreMatcher(parse_dockerignore("a\n!a/keep"))
    excluded, state = matcher.match("a", None)
    assert excluded
    assert matcher.match("a/keep", state)[0] is False
    assert matcher.match("a/other", state)[0] is True
