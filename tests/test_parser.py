"""The Dockerfile front end against golden files, and Docker's word rules as tables.

Golden cases: `testdata/parser/<case>/Dockerfile` parses to `expected.json` (grammar.dump's JSON,
indent 2, keys in the order dump gives them); `testdata/parser-negative/<case>/Dockerfile` fails
with `error.txt`, the exact rendering of the DockerfileError plus a final newline. Dockerfiles are
read as bytes, because CRLF line endings, a BOM and trailing blanks are what some cases test.
`pytest --update-golden` rewrites the expected files from the current output: review the diff.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from grammar.dump import to_data
from grammar.durations import parse_duration
from grammar.errors import DockerfileError
from grammar.parser import parse
from grammar.words import NotStringArray, flag_word, parse_json_array, split_whitespace, split_words

TESTDATA = Path(__file__).resolve().parent.parent / "testdata"


def _cases(folder: str) -> list[Path]:
    return sorted(path for path in (TESTDATA / folder).iterdir() if path.is_dir())


def _dockerfile(case: Path) -> str:
    return (case / "Dockerfile").read_bytes().decode("utf-8")


def _check_golden(path: Path, got: str, update: bool) -> None:
    if update:
        path.write_bytes(got.encode("utf-8"))
    assert path.exists(), f"{path} is missing: run pytest --update-golden and review it"
    assert got == path.read_bytes().decode("utf-8")


@pytest.mark.parametrize("case", _cases("parser"), ids=lambda case: case.name)
def test_parses_like_golden(case: Path, update_golden: bool) -> None:
    data = to_data(parse(_dockerfile(case)))
    _check_golden(case / "expected.json", json.dumps(data, indent=2, ensure_ascii=False) + "\n",
                  update_golden)


@pytest.mark.parametrize("case", _cases("parser-negative"), ids=lambda case: case.name)
def test_fails_like_golden(case: Path, update_golden: bool) -> None:
    with pytest.raises(DockerfileError) as caught:
        parse(_dockerfile(case))
    _check_golden(case / "error.txt", str(caught.value) + "\n", update_golden)


@pytest.mark.parametrize(("text", "escape", "words"), [
    ("a b\t c", "\\", ["a", "b", "c"]),
    ("  ", "\\", []),
    ('a="b c" d', "\\", ['a="b c"', "d"]),
    ("a='b c'", "\\", ["a='b c'"]),
    ("''", "\\", ["''"]),  # an empty quoted word is still a word
    ("a\\ b c", "\\", ["a\\ b", "c"]),  # escapes stay in the word, for expansion to remove
    ("a\\", "\\", ["a"]),  # an escape at the very end is dropped
    ('"a\\" b" c', "\\", ['"a\\" b"', "c"]),
    ("'a\\' b", "\\", ["'a\\'", "b"]),  # nothing is escaped inside single quotes
    ('"unterminated quote', "\\", ['"unterminated quote']),
    ('"a b\\', "\\", ['"a b']),
    ("a` b", "`", ["a` b"]),
    ("a\\ b", "`", ["a\\", "b"]),
    ("a\x1cb", "\\", ["a\x1cb"]),  # Go's unicode.IsSpace: not a separator, unlike str.isspace
    ("a\xa0b", "\\", ["a", "b"]),
])
def test_split_words(text: str, escape: str, words: list[str]) -> None:
    assert split_words(text, escape) == words


@pytest.mark.parametrize(("text", "words"), [
    ("", []),
    ("  a  ", ["a"]),
    ("a\tb\vc\fd\re", ["a", "b", "c", "d", "e"]),
    ('"a b" c', ['"a', 'b"', "c"]),  # quotes are not special here
    ("a\xa0b", ["a\xa0b"]),  # only Go's [\t\v\f\r ] separate
])
def test_split_whitespace(text: str, words: list[str]) -> None:
    assert split_whitespace(text) == words


@pytest.mark.parametrize(("text", "escape", "word"), [
    ("--from=build", "\\", "--from=build"),
    ('--mount="type=bind,target=/a b"', "\\", "--mount=type=bind,target=/a b"),
    ("--mount='a b'", "\\", "--mount=a b"),
    ("--a=x\\ y", "\\", "--a=x y"),
    ("--a='it\\'s'", "\\", "--a=it's"),  # unlike shell words, the escape works in single quotes
    ('--a="x', "\\", "--a=x"),
    ("--a=x\\", "\\", "--a=x"),
    ("--target=C:\\x", "`", "--target=C:\\x"),  # with a backtick escape, backslashes are literal
    ('--a=`"b', "`", '--a="b'),
    ('--""', "\\", "--"),
])
def test_flag_word(text: str, escape: str, word: str) -> None:
    assert flag_word(text, escape) == word


@pytest.mark.parametrize(("text", "array"), [
    ("[]", []),
    ('[""]', [""]),
    ('  [ "a" ,\t"b" ]  ', ["a", "b"]),
    ('["\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u0000 \\u2665"]', ['" \\ / \b \f \n \r \t \x00 \u2665']),
    ("echo hi", None),
    ('["a", "b"', None),
    ("['a']", None),
    ('["a"] b', None),
    ('{"a": "b"}', None),
    ("[NaN]", None),  # Go's JSON has no NaN or Infinity
    ("[Infinity]", None),
])
def test_parse_json_array(text: str, array: list[str] | None) -> None:
    assert parse_json_array(text) == array


@pytest.mark.parametrize("text", ['["a", 1]', '["a", null]', '[true]', '[["a"]]', '[{"a": "b"}]'])
def test_parse_json_array_refuses_non_strings(text: str) -> None:
    with pytest.raises(NotStringArray):
        parse_json_array(text)


@pytest.mark.parametrize(("text", "nanoseconds"), [
    ("0", 0),
    ("-0", 0),
    ("+0", 0),
    ("1ns", 1),
    ("1us", 1_000),
    ("1µs", 1_000),
    ("1μs", 1_000),
    ("500ms", 500_000_000),
    ("30s", 30_000_000_000),
    ("1m30s", 90_000_000_000),
    ("1.5h", 5_400_000_000_000),
    (".5s", 500_000_000),
    ("5.s", 5_000_000_000),
    ("1h0m0.001s", 3_600_001_000_000),
    ("-1s", -1_000_000_000),
    ("9223372036854775807ns", 2**63 - 1),
])
def test_parse_duration(text: str, nanoseconds: int) -> None:
    assert parse_duration(text) == nanoseconds


@pytest.mark.parametrize("text", [
    "", "5", "1h30", "s", ".s", "1x", "1 s", "++1s", "--1s", "1s ", "１s", "9223372036854775808ns", "1d",
])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)
