"""builder/cache/decide.py on a temporary cache root: which strategy finds a step's key (by
signature, by content, speculative), that they agree on it, and the hit or miss each gives."""
from __future__ import annotations

from pathlib import Path

import pytest

from builder.cache.decide import Hit, Miss, Speculation, Step, decide
from builder.cache.key import Inputs, step_key
from builder.cache.steps import StepCache
from builder.sources.tree import resolve
from builder.steps.copy import CopySpec, TreeSource
from builder.steps.files import CopySelection
from layers.blobstore import BlobStore
from tests.unit.trees import context

RUN = Step("parent", (("step 0", "ARG V"), ("ARG V", "1")), (("instruction", "RUN make"),),
           "slot", "stage")
BIG = 9 << 20  # above what is cheap to hash before deciding


@pytest.fixture
def cache(tmp_path: Path):
    root = str(tmp_path / "cache")
    opened = StepCache(root, BlobStore(root))
    yield opened
    opened.close()


def record(cache: StepCache, decision: Miss) -> None:
    cache.record(decision.key, "parent", "slot", decision.inputs, None,
                 {"image": {"rootfs": {"diff_ids": []}, "history": [{"empty_layer": True}]}})


def copy_step(cache: StepCache, root: Path, files: dict[str, str], extract: bool = False,
              memos=None) -> Step:
    tree = context(root, files)
    spec = CopySpec("/d", True, None, None, False, 0)
    selection = CopySelection((TreeSource(tree, resolve(tree, ".", confined=True)),), spec,
                              None, extract)
    return Step("parent", (), (("instruction", "COPY . /d"),), "slot", "stage", selection,
                memos or (lambda: cache.file_memos(str(root) + "/")))


@pytest.mark.parametrize("before, now, expected, reason", [
    (None, RUN, Miss, "no earlier build"),
    (RUN, RUN, Hit, None),
    (RUN, Step(RUN.parent, (("step 0", "ARG V"), ("ARG V", "2")), RUN.items, "slot", "stage"),
     Miss, "ARG V 1 -> 2"),
    (RUN, Step("other", RUN.pending, RUN.items, "slot", "stage"), Miss, "an earlier step changed"),
    (RUN, Step(RUN.parent, RUN.pending, (("instruction", "RUN make all"),), "slot", "stage"),
     Miss, "instruction changed"),
])
def test_a_step_without_sources_is_keyed_by_its_inputs(cache, before, now, expected, reason):
    if before is not None:
        record(cache, decide(cache, before))
    decision = decide(cache, now)
    assert type(decision) is expected
    assert decision.key == step_key(now.parent, Inputs(now.pending + now.items))
    if reason is not None:
        assert decision.reason == reason and decision.inputs.items == now.pending + now.items


@pytest.mark.parametrize("files, extract, expected", [
    ({"a.txt": "a", "b/c.txt": "c"}, False, Miss),  # a few small files: hashed first
    ({"big.bin": "x" * BIG}, False, Speculation),  # a cold, large context: hashed while written
    ({"big.bin": "x" * BIG}, True, Miss),  # ADD reads its archives before writing anything
])
def test_the_first_copy_of_a_context(cache, tmp_path, files, extract, expected):
    decision = decide(cache, copy_step(cache, tmp_path / "ctx", files, extract))
    assert type(decision) is expected
    if expected is Miss:
        assert decision.reason == "no earlier build"
        assert decision.inputs.get("sources").startswith("sha256:")


def test_the_three_strategies_agree_on_the_key(cache, tmp_path):
    files = {"big.bin": "x" * BIG, "small.txt": "s"}
    cold = decide(cache, copy_step(cache, tmp_path / "ctx", files))
    assert isinstance(cold, Speculation) and len(cold.unknown) == 2
    speculated = cold.settle(cache, {})  # the writer read nothing: settle hashes what is left
    record(cache, speculated)

    def no_memos() -> dict:
        raise AssertionError("a known signature needs no memo")

    signed = decide(cache, copy_step(cache, tmp_path / "ctx", files, memos=no_memos))
    assert isinstance(signed, Hit) and signed.key == speculated.key

    copied = tmp_path / "copy"  # the same files elsewhere: other lstats, the memo is of no use
    by_content = decide(cache, copy_step(cache, copied, files, extract=True))
    assert isinstance(by_content, Hit) and by_content.key == speculated.key


def test_an_edited_file_is_named_in_the_reason(cache, tmp_path):
    root = tmp_path / "ctx"
    record(cache, decide(cache, copy_step(cache, root, {"a.txt": "a", "b.txt": "b"})))
    (root / "b.txt").write_text("B")
    decision = decide(cache, copy_step(cache, root, {"a.txt": "a", "b.txt": "b"}))
    assert isinstance(decision, Miss) and decision.reason == "./b.txt changed"
    again = decide(cache, copy_step(cache, root, {}))
    assert again.key == decision.key, "by signature now, the same key"
