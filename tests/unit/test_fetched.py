"""builder/cache/fetched.py: ADD's kept downloads and checkouts, marked by use and removed by
prune when unused since a given time."""
from __future__ import annotations

import os
import time
from pathlib import Path

from builder.cache.fetched import mark_used, remove_unused, usage

COMMIT_TIME = 1_500_000_000


def _cache(tmp_path: Path) -> Path:
    download = tmp_path / "downloads" / "a"
    download.mkdir(parents=True)
    (download / "meta.json").write_text("{}")
    (download / "data").write_bytes(b"x" * 1000)
    checkout = tmp_path / "git" / "b"
    checkout.mkdir(parents=True)
    (checkout / "README").write_bytes(b"y" * 24)
    os.utime(checkout, (COMMIT_TIME, COMMIT_TIME))
    return tmp_path


def test_usage_counts_both_kinds(tmp_path: Path) -> None:
    found = usage(str(_cache(tmp_path)))
    assert (found.entries, found.bytes) == (2, 1026)


def test_marking_moves_only_the_ctime(tmp_path: Path) -> None:
    checkout = _cache(tmp_path) / "git" / "b"
    before = time.time()
    mark_used(str(checkout))
    status = checkout.stat()
    assert (status.st_mtime, status.st_atime) == (COMMIT_TIME, COMMIT_TIME)
    assert status.st_ctime >= int(before)


def test_only_entries_unused_since_are_removed(tmp_path: Path) -> None:
    cache = str(_cache(tmp_path))
    assert remove_unused(cache, time.time() - 60).entries == 0
    time.sleep(1.01 - time.time() % 1)  # the next second: the entries' ctimes are older
    since = time.time()
    mark_used(os.path.join(cache, "git", "b"))  # used since
    gone = remove_unused(cache, since)
    assert (gone.entries, gone.bytes) == (1, 1002)
    assert os.listdir(os.path.join(cache, "downloads")) == []
    assert os.listdir(os.path.join(cache, "git")) == ["b"]
