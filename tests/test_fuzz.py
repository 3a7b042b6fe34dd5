"""Coverage-guided fuzzing (atheris, libFuzzer's engine) of what reads hostile input: the
Dockerfile parser, layer extraction and image archive reading (tests/fuzz/fuzz_*.py). Each target
runs for PYBUILD_FUZZ_SECONDS (3 by default: a smoke run that also replays the seeds and every
input that once found a bug, tests/fuzz/regressions/); a long session:

    PYBUILD_FUZZ_SECONDS=600 python3 -m pytest -q -s tests/test_fuzz.py

A finding fails the test with the traceback and the input's file (libFuzzer's crash-*), kept
under the test's temporary directory; run the target on that file alone to replay it. The figures
(executions, executions per second, coverage) are printed with -s.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT, require

FUZZ = ROOT / "tests" / "fuzz"
# target -> (seed files, extra libFuzzer options)
TARGETS = {
    "parser": (sorted((ROOT / "testdata").glob("parser*/*/Dockerfile")),
               [f"-dict={FUZZ / 'dockerfile.dict'}", "-max_len=4096"]),
    "unpack": ([], ["-max_len=1024"]),
    "archive": ([], ["-max_len=512"]),
}


def _seconds() -> int:
    return int(os.environ.get("PYBUILD_FUZZ_SECONDS", "3"))


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_fuzz(target: str, tmp_path: Path) -> None:
    require(importlib.util.find_spec("atheris") is not None, "atheris (pip install atheris)")
    seeds, options = TARGETS[target]
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for number, seed in enumerate(seeds):
        shutil.copy(seed, corpus / f"seed-{number}")
    regressions = FUZZ / "regressions" / target
    for found in regressions.iterdir() if regressions.is_dir() else ():
        shutil.copy(found, corpus / found.name)
    done = subprocess.run(
        [sys.executable, str(FUZZ / f"fuzz_{target}.py"), str(corpus),
         f"-max_total_time={_seconds()}", "-len_control=0", "-timeout=30", "-rss_limit_mb=2048",
         f"-artifact_prefix={tmp_path}/", *options],
        cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(ROOT), TMPDIR=str(tmp_path)),
        capture_output=True,
        text=True, errors="replace", timeout=_seconds() + 300)
    log = done.stderr
    figures = re.findall(r"#(\d+)\s+DONE\s+cov: (\d+).*exec/s: (\d+)", log)
    if figures:
        runs, coverage, rate = figures[-1]
        print(f"\nfuzz {target}: {runs} executions in {_seconds()} s, {rate}/s, coverage {coverage}")
    assert done.returncode == 0, f"fuzz {target} found something:\n{log[-6000:]}"
