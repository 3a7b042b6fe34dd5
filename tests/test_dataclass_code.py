"""builder/cli/dataclass_code.py: dataclasses' generated methods compiled once and kept beside the
bytecode. The classes must behave exactly as without it, and a file that is not ours is ignored."""
from __future__ import annotations

import marshal
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

PROGRAM = """
import dataclasses, sys
from builder.cli import dataclass_code
dataclass_code.install()

@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int = 2
    tags: tuple = ()

p = Point(1)
assert (p, repr(p), hash(p) == hash(Point(1)), p == Point(1, 2), p != Point(1, 3)) == \\
    (Point(1, 2, ()), "Point(x=1, y=2, tags=())", True, True, True)
try:
    p.x = 5
except dataclasses.FrozenInstanceError:
    pass
else:
    raise AssertionError("frozen")
"""


def _run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    full.update(PYTHONPYCACHEPREFIX=str(tmp_path / "pycache"), PYTHONPATH=str(ROOT), **env)
    done = subprocess.run([sys.executable, "-c", PROGRAM], env=full, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done


def _file(tmp_path: Path) -> Path:
    (found,) = (tmp_path / "pycache").rglob("dataclass-code.*.marshal")
    return found


def test_classes_behave_and_their_code_is_kept(tmp_path):
    _run(tmp_path)
    kept = marshal.loads(_file(tmp_path).read_bytes())
    assert any("def __init__(self,x:_type_x,y:_type_y" in text for text in kept)
    before = _file(tmp_path).stat().st_mtime_ns
    _run(tmp_path)  # everything found: nothing new to write
    assert _file(tmp_path).stat().st_mtime_ns == before


@pytest.mark.parametrize("content", [b"", b"garbage\x00\xff", marshal.dumps(["a list"]),
                                     marshal.dumps({"def f(): pass": "not code"}),
                                     marshal.dumps({1: compile("x = 1", "<s>", "exec")})],
                         ids=["empty", "garbage", "list", "not-code", "key-not-text"])
def test_a_file_that_is_not_ours_is_ignored_and_replaced(tmp_path, content):
    _run(tmp_path)
    path = _file(tmp_path)
    path.write_bytes(content)
    _run(tmp_path)
    kept = marshal.loads(path.read_bytes())
    assert any("def __init__(self,x:_type_x,y:_type_y" in text for text in kept)


def test_nothing_is_written_when_python_writes_no_bytecode(tmp_path):
    _run(tmp_path, PYTHONDONTWRITEBYTECODE="1")
    assert not list((tmp_path / "pycache").rglob("dataclass-code.*"))
