"""builder/cachekey.py: the step key is a pure function of the parent key and the named inputs,
and a miss names the first input that differs from the closest earlier build."""
from __future__ import annotations

import pytest

from builder.cache import key as cachekey
from builder.cache.key import Inputs, miss_reason, step_key

BASE = Inputs((("instruction", "RUN make"), ("ARG V", "1"), ("sources", "sha256:a")))


def test_a_key_is_the_same_for_the_same_parent_and_inputs() -> None:
    assert step_key("p", BASE) == step_key("p", Inputs(tuple(BASE.items)))
    assert len(step_key("p", BASE)) == 64


def test_a_new_format_makes_every_key_new(monkeypatch: pytest.MonkeyPatch) -> None:
    before = step_key("p", BASE)
    monkeypatch.setattr(cachekey, "FORMAT", cachekey.FORMAT + "-next")
    assert step_key("p", BASE) != before


@pytest.mark.parametrize("parent, inputs", [
    ("q", BASE),
    ("p", Inputs((("instruction", "RUN make all"), ("ARG V", "1"), ("sources", "sha256:a")))),
    ("p", Inputs((("instruction", "RUN make"), ("ARG V", "2"), ("sources", "sha256:a")))),
    ("p", Inputs((("instruction", "RUN make"), ("ARG V", "1"), ("sources", "sha256:b")))),
    ("p", Inputs((("ARG V", "1"), ("instruction", "RUN make"), ("sources", "sha256:a")))),
    ("p", Inputs((("instruction", "RUN make"), ("ARG V", "1")))),
    ("p", Inputs((("instruction", "RUN make"), ("ARG W", "1"), ("sources", "sha256:a")))),
    ("", BASE),
])
def test_every_input_its_name_its_order_and_the_parent_change_the_key(parent: str,
                                                                      inputs: Inputs) -> None:
    assert step_key(parent, inputs) != step_key("p", BASE)


def test_inputs_get_a_value_by_name() -> None:
    assert (BASE.get("ARG V"), BASE.get("missing")) == ("1", None)


LONG = "x" * 50


@pytest.mark.parametrize("now, before, same_parent, reason", [
    (BASE, None, True, "no earlier build"),
    (BASE, BASE, False, "an earlier step changed"),
    (BASE, BASE, True, "cache entry missing"),
    (Inputs((("instruction", "RUN make all"),)), Inputs((("instruction", "RUN make"),)), True,
     "instruction changed"),
    (Inputs((("ARG V", "2"),)), Inputs((("ARG V", "1"),)), True, "ARG V 1 -> 2"),
    (Inputs((("ARG V", LONG),)), Inputs((("ARG V", "1"),)), True,
     f"ARG V 1 -> {'x' * 37}..."),
    (Inputs((("step ENV", "ENV A=2"),)), Inputs((("step ENV", "ENV A=1"),)), True,
     "ENV A=1 -> ENV A=2"),
    (Inputs((("base image alpine", "sha256:2"),)), Inputs((("base image alpine", "sha256:1"),)),
     True, "base image alpine now sha256:2"),
    (Inputs((("from image x", "sha256:2"),)), Inputs((("from image x", "sha256:1"),)), True,
     "from image x now sha256:2"),
    (Inputs((("SOURCE_DATE_EPOCH", "5"),)), Inputs((("SOURCE_DATE_EPOCH", ""),)), True,
     "SOURCE_DATE_EPOCH changed"),
    (Inputs((("sources", "b"),)), Inputs((("sources", "a"),)), True, "sources changed"),
    (Inputs((("instruction", "RUN a"), ("ARG NEW", "1"))), Inputs((("instruction", "RUN a"),)),
     True, "new input ARG NEW"),
    (Inputs((("instruction", "RUN a"),)), Inputs((("instruction", "RUN a"), ("ARG OLD", "1"))),
     True, "ARG OLD no longer applies"),
    (Inputs((("ARG A", "2"), ("ARG B", "2"))), Inputs((("ARG A", "1"), ("ARG B", "1"))), True,
     "ARG A 1 -> 2"),
])
def test_a_miss_names_the_first_difference(now: Inputs, before: Inputs | None, same_parent: bool,
                                           reason: str) -> None:
    assert miss_reason(now, before, same_parent) == reason


def test_changed_sources_are_described_by_the_callers_function() -> None:
    said = miss_reason(Inputs((("sources", "new"),)), Inputs((("sources", "old"),)), True,
                       lambda old, new: f"{old} => {new}")
    assert said == "old => new"
