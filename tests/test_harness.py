"""The conformance harness (tests/conformance) finds what it is there to find: deliberately
wrong candidates (tests/tampering_candidate.py: pybuild, then one change to its image) are
reported with the difference named; pybuild itself, and the same tarball rewritten unchanged,
pass; an error case needs a failure that names its line; declared differences are held to."""
from __future__ import annotations

import json
import sys

import pytest

from tests.conformance import Options, load_cases, run_corpus
from tests.support import ROOT, docker_available, require

PYBUILD = f"{sys.executable} -m builder.cli "
TAMPER = f"{sys.executable} {ROOT / 'tests' / 'tampering_candidate.py'} "
OPTIONS = "-f {dockerfile} -t {tag} -o {out} {buildargs} {target} {context}"
CASES = {
    "01-copy-and-env": ({}, "FROM scratch\nENV A=1 B=2\nCOPY hello.txt /hello.txt\n"
                            "COPY tool.sh /bin/tool.sh\nCMD [\"/bin/tool.sh\"]\n"),
    "02-error-unknown-instruction": ({"expect": "error", "error_line": 2},
                                     "FROM scratch\nCPY hello.txt /\n"),
    "03-run-build-arg": ({}, "FROM scratch\nARG V\nLABEL v=$V\n"),
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """The two cases, and a cache of Docker's results all the tests share."""
    require(docker_available(), "a running Docker engine")
    root = tmp_path_factory.mktemp("harness")
    for name, (meta, dockerfile) in CASES.items():
        case = root / "cases" / name
        case.mkdir(parents=True)
        (case / "case.json").write_text(json.dumps(meta))
        (case / "Dockerfile").write_text(dockerfile)
        (case / "hello.txt").write_text("hello\n")
        (case / "tool.sh").write_text("#!/bin/sh\necho tool\n")
        (case / "tool.sh").chmod(0o755)
    return {"cases": root / "cases", "cache": root / "docker", "pybuild": root / "pybuild"}


def run(corpus: dict, candidate: str, select: str, **options):
    results = run_corpus(load_cases(corpus["cases"], select), Options(
        candidate=candidate + OPTIONS, env={"PYBUILD_CACHE_DIR": str(corpus["pybuild"])},
        cwd=str(ROOT), cache=corpus["cache"], **options)).results
    assert len(results) == 1
    return results[0]


@pytest.mark.parametrize("candidate, differences", [
    (PYBUILD, []),
    (TAMPER + "none ", []),
    (TAMPER + "chmod ", ["/hello.txt: mode docker='0o644' candidate='0o600'"]),
    (TAMPER + "drop-env ", ["config.Env: B docker='2' candidate='<unset>'"]),
    (TAMPER + "add-file ", ["/extra.txt: extra in candidate (file)"]),
])
def test_each_difference_is_reported(corpus, candidate, differences) -> None:
    result = run(corpus, candidate, "^01-")
    assert list(result.verdict.differences) == differences
    assert result.verdict.status == ("FAIL" if differences else "PASS")


def test_docker_side_is_cached(corpus) -> None:
    first = run(corpus, PYBUILD, "^01-")
    again = run(corpus, PYBUILD, "^01-")
    assert again.cached and again.docker == first.docker


def test_run_build_args_reach_both_builders_and_stay_out_of_the_cache_key(corpus) -> None:
    """A value only the run knows (a local server's address) must not make Docker's side
    rebuild; an image that keeps such a value then fails, it never passes on a stale result.
    The base images' key does rebuild it."""
    first = run(corpus, PYBUILD, "^03-", build_args={"V": "one"})
    assert first.verdict.status == "PASS" and first.docker.image["config"]["Labels"] == {"v": "one"}
    again = run(corpus, PYBUILD, "^03-", build_args={"V": "two"})
    assert again.cached and again.verdict.status == "FAIL"
    rebased = run(corpus, PYBUILD, "^03-", build_args={"V": "two"}, base_key="another base")
    assert not rebased.cached and rebased.verdict.status == "PASS"


@pytest.mark.parametrize("candidate, strict, status, difference", [
    (PYBUILD, True, "PASS", None),
    ("echo broken; exit 1; ", False, "PASS", None),
    ("echo broken; exit 1; ", True, "FAIL", "does not name Dockerfile line 2"),
    ("true || ", False, "FAIL", "candidate succeeded but docker fails this case"),
    ("no-such-builder ", False, "FAIL", "candidate did not run properly"),
])
def test_error_cases(corpus, candidate, strict, status, difference) -> None:
    result = run(corpus, candidate, "^02-", strict_lines=strict)
    assert result.verdict.status == status, result.verdict.differences
    if difference:
        assert difference in result.verdict.differences[0]


@pytest.mark.parametrize("candidate, expected, status", [
    (TAMPER + "chmod ", ("/hello.txt: mode",), "DIFFERS"),
    (TAMPER + "chmod ", ("/hello.txt: mode", "config.Env"), "FAIL"),  # one never seen
    (TAMPER + "add-file ", ("/hello.txt: mode",), "FAIL"),  # another difference than declared
    (PYBUILD, ("/hello.txt: mode",), "FAIL"),  # the case matches Docker now
])
def test_declared_differences(corpus, candidate, expected, status) -> None:
    result = run(corpus, candidate, "^01-", expected={"01-copy-and-env": expected})
    assert result.verdict.status == status, result.verdict.differences


def test_probe_failure_voids_error_cases(corpus) -> None:
    result = run(corpus, PYBUILD, "^02-", probe_base="no-such-image:probe")
    assert result.verdict.status == "FAIL"
    assert "failed the preflight probe" in result.verdict.differences[0]
