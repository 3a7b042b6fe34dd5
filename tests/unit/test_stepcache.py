"""builder/stepcache.py on a temporary cache root: reuse only of results whose layers are
intact, --no-cache and --no-cache-filter, records imported with --cache-from, and the reason a
step runs."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from builder.cache.key import Inputs, step_key
from builder.cache.sources import manifest
from builder.cache.steps import StepCache
from layers.blobstore import BlobStore
from layers.cachemanifest import CacheRecord

BEFORE = Inputs((("instruction", "RUN make"), ("ARG V", "1")))
NOW = Inputs((("instruction", "RUN make"), ("ARG V", "2")))


def state(*diff_ids: str, empty: bool = False) -> dict:
    return {"image": {"rootfs": {"diff_ids": list(diff_ids)},
                      "history": [{"empty_layer": True}] if empty else [{}]},
            "scope": [], "cmd_set": False}


@pytest.fixture
def root(tmp_path: Path) -> str:
    return str(tmp_path / "cache")


@pytest.fixture
def cache(root: str):
    opened = StepCache(root, BlobStore(root))
    yield opened
    opened.close()


def recorded(cache: StepCache, inputs: Inputs = BEFORE, parent: str = "p",
             data: bytes = b"layer") -> tuple[str, str]:
    layer = cache.blobs.put_bytes(data)
    key = step_key(parent, inputs)
    cache.record(key, parent, "slot", inputs, layer, state(layer))
    return key, layer


def test_an_intact_result_is_reused(cache: StepCache) -> None:
    key, layer = recorded(cache)
    found = cache.lookup(key, "stage", "slot", "p", BEFORE)
    assert found is not None and found.diff_id == layer


@pytest.mark.parametrize("damage", ["remove", "rewrite"])
def test_a_result_with_a_missing_or_altered_layer_is_forgotten(cache: StepCache,
                                                               damage: str) -> None:
    key, layer = recorded(cache)
    path = cache.blobs.path(layer)
    if damage == "remove":
        os.unlink(path)
    else:
        with open(path, "wb") as handle:
            handle.write(b"other bytes")
    assert cache.lookup(key, "stage", "slot", "p", BEFORE) is None
    assert cache.index.lookup(key) is None and not os.path.exists(path)
    assert cache.reason(step_key("p", BEFORE), "slot", "p", BEFORE, "stage") == \
        f"its cached layer {layer} was missing or damaged"


def test_an_untouched_blob_is_trusted_by_its_stat_a_touched_one_is_hashed(cache: StepCache) -> None:
    key, layer = recorded(cache)
    os.utime(cache.blobs.path(layer), ns=(1, 1))
    assert cache.lookup(key, "stage", "slot", "p", BEFORE) is not None, "same bytes, new stat"
    assert cache.index.blob_stat(layer)[1] == 1, "the new stat is remembered"


@pytest.mark.parametrize("no_cache, stages, label, disabled, reason", [
    (True, frozenset(), "stage", True, "--no-cache"),
    (False, frozenset({"build"}), "build", True, "--no-cache-filter build"),
    (False, frozenset({"build"}), "stage", False, "ARG V 1 -> 2"),
])
def test_no_cache_options(root: str, no_cache: bool, stages: frozenset, label: str,
                          disabled: bool, reason: str) -> None:
    cache = StepCache(root, BlobStore(root), no_cache, stages)
    try:
        key, _ = recorded(cache)
        assert cache.disabled_for(label) is disabled
        assert (cache.lookup(key, label, "slot", "p", BEFORE) is None) is disabled
        assert cache.reason(step_key("p", NOW), "slot", "p", NOW, label) == reason
    finally:
        cache.close()


@pytest.mark.parametrize("slot, parent, inputs, reason", [
    ("slot", "p", NOW, "ARG V 1 -> 2"),
    ("slot", "q", BEFORE, "an earlier step changed"),
    ("slot", "p", BEFORE, "cache entry missing"),
    ("other slot", "p", NOW, "no earlier build"),
])
def test_the_reason_compares_with_the_latest_build_of_the_slot(
        cache: StepCache, slot: str, parent: str, inputs: Inputs, reason: str) -> None:
    cache.index.record("recorded under another key", "p", "slot", BEFORE, None, state())
    assert cache.reason(step_key(parent, inputs), slot, parent, inputs, "stage") == reason


def test_changed_sources_are_named_from_the_stored_manifests(cache: StepCache) -> None:
    old_digest, old_text = manifest([["app.py", "f", 420, 1, "", "x"]])
    new_digest, new_text = manifest([["app.py", "f", 420, 1, "", "y"]])
    cache.remember([], old_digest, old_text)
    cache.remember([], new_digest, new_text)
    recorded(cache, Inputs((("sources", old_digest),)))
    changed = Inputs((("sources", new_digest),))
    assert cache.reason(step_key("p", changed), "slot", "p", changed, "stage") == \
        "app.py changed"
    assert cache.source_manifests((CacheRecord("k", "p", (("sources", old_digest),), {}),)) == {
        old_digest: [["app.py", "f", 420, 1, "", "x"]]}


def test_an_imported_record_is_a_hit_when_its_layers_can_be_had(cache: StepCache) -> None:
    key = step_key("p", BEFORE)
    remote = "sha256:" + "ab" * 32
    cache.imported[key] = CacheRecord(key, "p", BEFORE.items, state(remote))
    assert cache.lookup(key, "stage", "slot", "p", BEFORE) is None, "its layer is nowhere"
    cache.remote_available = lambda digest: digest == remote
    found = cache.lookup(key, "stage", "slot", "p", BEFORE)
    assert found is not None and found.diff_id == remote and cache.index.lookup(key) is None
    cache.settle()
    assert cache.index.lookup(key) is None, "not recorded while its layer is not here"


def test_an_imported_hit_is_recorded_once_its_layers_are_here(cache: StepCache) -> None:
    layer = cache.blobs.put_bytes(b"fetched")
    key = step_key("p", BEFORE)
    cache.imported[key] = CacheRecord(key, "p", BEFORE.items, state(layer))
    assert cache.lookup(key, "stage", "slot", "p", BEFORE) is not None
    cache.settle()
    assert cache.index.lookup(key).diff_id == layer and cache.unsettled == []


def test_an_empty_layer_step_records_no_layer(cache: StepCache) -> None:
    key = step_key("p", BEFORE)
    base = cache.blobs.put_bytes(b"base")
    cache.imported[key] = CacheRecord(key, "p", BEFORE.items, state(base, empty=True))
    assert cache.lookup(key, "stage", "slot", "p", BEFORE).diff_id is None


def test_the_reason_for_a_step_never_run_here_compares_with_an_imported_one(
        cache: StepCache) -> None:
    cache.imported["k"] = CacheRecord("k", "p", BEFORE.items, state())
    assert cache.reason(step_key("p", NOW), "slot", "p", NOW, "stage") == "ARG V 1 -> 2"
    assert cache.reason(step_key("q", BEFORE), "slot", "q", BEFORE, "stage") == "an earlier step changed"


def test_an_output_is_known_while_nobody_touched_it(cache: StepCache, tmp_path: Path) -> None:
    out = tmp_path / "out.tar"
    out.write_bytes(b"tar")
    assert not cache.output_holds(str(out), "image")
    cache.remember_output(str(out), "image")
    assert cache.output_holds(str(out), "image") and not cache.output_holds(str(out), "other")
    out.write_bytes(b"tar!")
    assert not cache.output_holds(str(out), "image")
    assert not cache.output_holds("-", "image") and not cache.output_holds(
        str(tmp_path / "missing"), "image")
