"""Many instructions (issue 11): `FROM scratch` + 1,250 and 10,000 `ENV Vn=n` lines, built cold (an
empty cache root) and rebuilt (everything cached). Run on demand:

    python3 -m pytest -q tests/benchmarks/test_step_scaling.py -m benchmark -s -p no:cacheprovider

A build whose cost per step does not grow with the steps before it takes 8x as long for 8x the
lines (less, with Python's start-up in both). Before the fix: 0.78 s and 39 s cold, 26 s rebuilt.
Figures are printed, never asserted; tests/test_step_scaling.py checks the scaling by counting.
"""
from __future__ import annotations

import os
import shutil
import sys

import pytest

from tests.benchmarks.workload import Command, Table, best_of
from tests.support import ROOT

pytestmark = pytest.mark.benchmark

RUNS = 3
SIZES = (1_250, 10_000)


def test_time_grows_with_the_number_of_instructions(tmp_path):
    table = Table("FROM scratch + N x ENV (best of %d)" % RUNS)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    timings = {}
    for lines in SIZES:
        context = tmp_path / f"ctx{lines}"
        context.mkdir()
        (context / "Dockerfile").write_text(
            "FROM scratch\n" + "".join(f"ENV V{i}={i}\n" for i in range(lines)))
        cache = tmp_path / f"cache{lines}"
        argv = [sys.executable, "-m", "builder.cli", "--progress=quiet", "--cache-dir", str(cache),
                "-o", str(tmp_path / "image.tar"), str(context)]
        cold, warm = best_of(RUNS, Command(argv, before=lambda: shutil.rmtree(cache, True), env=env),
                             Command(argv, env=env))
        timings[lines] = cold, warm
        first = timings[SIZES[0]]
        table.add(f"{lines} lines, cold", cold, versus=(f"{SIZES[0]}", first[0]), goal="~8x")
        table.add(f"{lines} lines, rebuilt", warm, versus=(f"{SIZES[0]}", first[1]), goal="~8x")
    print(table.render())
