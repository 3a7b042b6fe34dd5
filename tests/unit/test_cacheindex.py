"""builder/cacheindex.py on a temporary cache root: step results by key and by slot, file
memos by prefix (names that are not UTF-8 included), manifests, scans, parses, blob stats,
outputs and leases."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from builder.cache.key import Inputs
from builder.cache.index import CacheIndex, FileMemo

INPUTS = Inputs((("instruction", "RUN make"), ("ARG V", "1")))
STATE = {"image": {"rootfs": {"diff_ids": ["sha256:l1"]}}, "scope": [["V", "1"]], "cmd_set": False}


@pytest.fixture
def index(tmp_path: Path):
    opened = CacheIndex(str(tmp_path / "cache"))
    yield opened
    opened.close()


def test_a_recorded_step_is_found_by_key_with_its_inputs_and_state(index: CacheIndex) -> None:
    assert index.lookup("k1") is None
    index.record("k1", "p", "slot", INPUTS, "sha256:l1", STATE)
    found = index.lookup("k1")
    assert (found.key, found.parent, found.slot, found.inputs, found.diff_id, found.state) == (
        "k1", "p", "slot", INPUTS, "sha256:l1", STATE)
    index.forget("k1")
    assert index.lookup("k1") is None and index.latest_in_slot("slot") is None


def test_the_latest_in_a_slot_is_the_one_last_used(index: CacheIndex) -> None:
    index.record("k1", "p", "slot", INPUTS, None, STATE)
    time.sleep(0.01)
    index.record("k2", "p", "slot", INPUTS, None, STATE)
    assert index.latest_in_slot("slot").key == "k2"
    time.sleep(0.01)
    index.touch("k1", "slot")
    assert index.latest_in_slot("slot").key == "k1"
    assert [r.key for r in index.steps()] == ["k2", "k1"], "least recently used first"
    assert index.latest_in_slot("other") is None


def test_results_survive_the_connection(tmp_path: Path) -> None:
    first = CacheIndex(str(tmp_path))
    first.record("k1", "p", "slot", INPUTS, None, STATE)
    first.close()
    second = CacheIndex(str(tmp_path))
    assert second.lookup("k1").state == STATE
    second.close()


def test_file_memos_by_prefix_including_names_that_are_not_utf8(index: CacheIndex) -> None:
    odd = os.fsdecode(b"/ctx/caf\xe9")
    memo = FileMemo(1, 2, 3, 4, 0o100644, "d")
    index.remember_files([("/ctx/a", memo), (odd, memo), ("/ctx2/b", memo), ("/other/c", memo)])
    assert index.file_memos("/ctx/") == {"/ctx/a": tuple(memo), odd: tuple(memo)}
    index.remember_files([("/ctx/a", memo._replace(digest="e"))])
    assert index.file_memos("/ctx/")["/ctx/a"][5] == "e"
    index.remember_files([])


def test_manifests_scans_and_parses(index: CacheIndex) -> None:
    index.put_manifest("sha256:m", '[["a","f",420,1,"","x"]]')
    index.put_manifest("sha256:m", "[]")
    assert index.manifest("sha256:m") == [["a", "f", 420, 1, "", "x"]], "the first one stays"
    assert index.manifest("sha256:none") is None
    index.remember_scan("sig", "sha256:m")
    assert (index.scanned("sig"), index.scanned("other")) == ("sha256:m", None)
    index.remember_parse("key", b"\x00body")
    assert (index.parsed("key"), index.parsed("other")) == (b"\x00body", None)


def test_blob_stats_and_outputs(index: CacheIndex, tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x")
    st = os.stat(path)
    index.remember_blob("sha256:b", st)
    assert index.blob_stat("sha256:b") == (1, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    index.forget_blob("sha256:b")
    assert index.blob_stat("sha256:b") is None
    index.remember_output("/out.tar", "id", st)
    assert index.output("/out.tar") == ("id", 1, st.st_mtime_ns, st.st_ino)
    assert index.output("/other.tar") is None


def test_leases_of_dead_processes_are_dropped(index: CacheIndex) -> None:
    assert index.oldest_live_lease() is None
    index.take_lease()
    mine = index.oldest_live_lease()
    assert mine is not None and mine <= time.time()
    index.db.execute("INSERT INTO leases VALUES (?, ?)", (2**22 + 12345, 1.0))
    assert index.oldest_live_lease() == mine, "a pid that is not running holds nothing"
    assert index.db.execute("SELECT COUNT(*) FROM leases").fetchone()[0] == 1
    index.drop_lease()
    assert index.oldest_live_lease() is None
