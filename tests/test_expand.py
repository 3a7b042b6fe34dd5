"""grammar.expand against the case table in testdata/expand/cases.txt (its header gives the
format), plus a property: no input makes it fail with anything but DockerfileError."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from grammar.errors import DockerfileError
from grammar.expand import expand_word, expand_words

CASES = Path(__file__).parent.parent / "testdata" / "expand" / "cases.txt"
MARKS = {"«TAB»": "\t", "«NL»": "\n", "«NBSP»": "\xa0", "«NEL»": "\x85", "«FS»": "\x1c",
         "«IDSP»": "\u3000", "«BOM»": "\ufeff"}


def marked(value: str) -> str:
    return re.sub("«[A-Z]+»", lambda mark: MARKS[mark.group()], value)


def text(field: str) -> str:
    """A field as text: trimmed, unwrapped from ⟨ ⟩, with «MARKS» replaced."""
    field = field.strip()
    if field.startswith("⟨") and field.endswith("⟩"):
        field = field[1:-1]
    return marked(field)


def load_cases() -> list:
    cases = []
    for number, line in enumerate(CASES.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        mode, env, source, expected = line.split(" | ", 3)
        env_items = [] if env.strip() == "-" else re.findall(r"(\S+?)=(⟨[^⟩]*⟩|\S*)", env)
        want = ([marked(word) for word in json.loads(expected)] if mode.startswith("words")
                else text(expected))
        cases.append(pytest.param(mode.strip(), {name: text(value) for name, value in env_items},
                                  text(source), want, id=f"{number}:{source.strip()}"))
    return cases


@pytest.mark.parametrize("mode, env, source, expected", load_cases())
def test_case(mode: str, env: dict[str, str], source: str, expected: str | list[str]) -> None:
    kind, _, backtick = mode.partition("-")
    escape = "`" if backtick else "\\"
    if kind == "error":
        with pytest.raises(DockerfileError) as raised:
            expand_word(source, env, escape)
        assert raised.value.message == expected
    elif kind == "words":
        assert expand_words(source, env, escape) == expected
    else:
        assert expand_word(source, env, escape) == expected


def test_deep_nesting_is_a_dockerfile_error() -> None:
    with pytest.raises(DockerfileError, match="nested too deeply"):
        expand_word("${A:-" * 2000 + "}" * 2000, {})


SHELLISH = st.text(alphabet="${}:-+?#%/*[]'\"\\` \tab0@é<")


@given(st.one_of(st.text(), SHELLISH), st.dictionaries(st.sampled_from("ab0@"), st.text()),
       st.sampled_from("\\`"))
def test_only_dockerfile_errors(source: str, env: dict[str, str], escape: str) -> None:
    try:
        word = expand_word(source, env, escape)
    except DockerfileError:
        with pytest.raises(DockerfileError):
            expand_words(source, env, escape)
        return
    assert isinstance(word, str)
    words = expand_words(source, env, escape)
    assert all(isinstance(w, str) and w for w in words)
