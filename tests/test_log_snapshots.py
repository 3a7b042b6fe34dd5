"""Snapshots of the plain build log, failing builds above all: each testdata/logs/CASE holds a
Dockerfile (built with a.txt beside it, FROM the busybox:test base) and `expected.log`, the log
with the parts that change from run to run replaced (times, digests, the temp directory). A
case with `args` builds once first, then again with those arguments, and snapshots the second.

Regenerate after a deliberate change: python3 -m pytest -q tests/test_log_snapshots.py --update-golden
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.support import ROOT, busybox_base, pybuild

CASES = ROOT / "testdata" / "logs"


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return busybox_base(tmp_path_factory.mktemp("logs-base"))


def normalise(log: str, work: Path) -> str:
    log = log.replace(str(work), "<WORK>")
    log = re.sub(r"sha256:[0-9a-f]{64}", "sha256:<DIGEST>", log)
    log = re.sub(r"^(#\d+) \d+\.\d{3} ", r"\1 <T> ", log, flags=re.M)
    log = re.sub(r"\b\d+\.\ds\b", "<T>s", log)
    return re.sub(r"\b\d+(\.\d+)?(B|kB|MB)\b", "<SIZE>", log)


@pytest.mark.parametrize("case", sorted(p.name for p in CASES.iterdir() if p.is_dir()))
def test_log(case: str, base: Path, tmp_path: Path, update_golden: bool) -> None:
    source = CASES / case
    context = tmp_path / "context"
    context.mkdir()
    shutil.copy(source / "Dockerfile", context / "Dockerfile")
    (context / "a.txt").write_text("a\n")
    env = {"PYBUILD_CACHE_DIR": str(tmp_path / "cache")}
    assert pybuild("load", "-q", "-i", str(base), env=env).returncode == 0
    command = ("--progress", "plain", "--network", "none", "-o", str(tmp_path / "out.tar"))
    extra = (source / "args").read_text().split() if (source / "args").exists() else None
    if extra is not None:
        assert pybuild(*command, str(context), env=env).returncode == 0
    result = pybuild(*command, *(extra or ()), str(context), env=env)
    got = normalise(result.stderr, tmp_path) + f"exit {result.returncode}\n"
    golden = source / "expected.log"
    if update_golden:
        golden.write_text(got)
    assert got == golden.read_text()
    if result.returncode != 0:
        assert not (tmp_path / "out.tar").exists() or extra is not None
