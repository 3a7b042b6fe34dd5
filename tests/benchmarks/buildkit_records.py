"""BuildKit's build cache records, for benchmarks that must remove what their builds left in a
shared dockerd (never `docker builder prune` of anything not theirs)."""
from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable

from tests.support import DOCKER


def records() -> dict[str, dict]:
    """Every build cache record of the engine, by ID."""
    out = subprocess.run([DOCKER, "system", "df", "-v", "--format", "{{json .BuildCache}}"],
                         capture_output=True, text=True, check=True,
                         env=dict(os.environ, DOCKER_BUILDKIT="1")).stdout
    return {record["ID"]: record for record in json.loads(out or "[]") or []}


def remove_ours(before: set[str], ours: Callable[[dict], bool], sources: set[str]) -> list[str]:
    """Remove the records made since `before` that are ours: those `ours` accepts, our contexts'
    `sources`, the records below them that only ours hang from, and those above them. Returns
    lines for the benchmark's report."""
    found = records()
    new = {i: r for i, r in found.items() if i not in before}
    doomed = {i for i, r in new.items() if ours(r)} | (sources & set(new))
    children: dict[str, set[str]] = {}
    for i, record in found.items():
        children.setdefault(record["Parent"], set()).add(i)
    grown = True
    while grown:
        grown = False
        for i, record in new.items():
            if i in doomed:
                continue
            kids = children.get(i)
            if (kids and kids <= doomed) or record["Parent"] in doomed:
                doomed.add(i)
                grown = True
    for i in sorted(doomed, key=lambda i: _depth(found, i), reverse=True):
        # Children first: a parent with a child left is in use.
        subprocess.run([DOCKER, "builder", "prune", "-a", "-f", "--filter", f"id={i}"],
                       capture_output=True)
    left = set(records()) & doomed
    report = [f"removed {len(doomed) - len(left)} BuildKit cache records of these builds"]
    return report + ([f"BuildKit cache records not removed: {sorted(left)}"] if left else [])


def _depth(found: dict[str, dict], i: str) -> int:
    depth = 0
    while (i := found.get(i, {}).get("Parent", "")) and depth < 1000:
        depth += 1
    return depth
