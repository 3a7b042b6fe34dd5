"""Differential conformance: every case of testdata/conformance built by real Docker (BuildKit) and
by pybuild, both loaded into Docker, configs and exported filesystems compared entry by entry.

The comparison is ../shared/tools/difftest.py; it runs once per session and each case is its own
test. The base image of the RUN cases, busybox:test, is made offline by
testdata/images/busybox/make.py and loaded into both Docker and pybuild's store. Cases tagged `version-specific` (newer BuildKit than this machine's Docker 20.10 differs, and
pybuild follows the newer one) or `pybuild-differs` (a deliberate difference, listed in the
README) are left to tests/test_differences.py, which asserts pybuild's side of them.

The corpus runs once per isolation strategy: `namespaces`, `chroot` (what unprivileged
containers get) and `rootless`, as a user the test creates with subordinate ids
(tests/rootless_user.py; tests/rootless_candidate.py runs pybuild as that user): every strategy
must make Docker's images.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.rootless_user import rootless_user
from tests.support import ROOT, SHARED, docker, docker_available, pybuild, require

CASES = ROOT / "testdata" / "conformance"
HARNESS = SHARED / "tools" / "difftest.py"
BUSYBOX_RECIPE = ROOT / "testdata" / "images" / "busybox" / "make.py"
BASE_IMAGE = "busybox:test"
SKIPPED_TAGS = ("version-specific", "pybuild-differs")
STRATEGIES = ("namespaces", "chroot", "rootless")
# Where chroot, having no mount namespace, cannot do what Docker does (README, "How RUN runs"):
# what the harness must then say.
CHROOT_DIFFERS = {
    "128-error-run-write-etc-hosts": "candidate succeeded but docker fails",  # a writable copy
    "132-run-user-supplementary-groups": "candidate build failed",  # no /proc to read
    "175-run-hostname-and-hosts": "/hostname.txt: content differs",  # no uts namespace
    "176-run-stdin-empty-pipe": "/stdin-kind.txt: content differs",  # /dev/stdin needs /proc
    "177-run-dev-mqueue": "/mqueue.txt: content differs",  # nothing mounted, no /proc
    "179-run-only-std-fds": "candidate build failed",  # no /proc to read
}
# Where the kernel forbids what Docker's root daemon may do: no device nodes in a user namespace
# (every strategy but chroot runs the command in one).
USERNS_DIFFERS = {
    "119-run-mknod-devices": "candidate build failed",
    "166-copy-from-run-stage-special-files": "candidate build failed",
}
DIFFERS = {"namespaces": USERNS_DIFFERS, "chroot": CHROOT_DIFFERS, "rootless": USERNS_DIFFERS}


def _case_names() -> list[str]:
    names = []
    for case in sorted(p for p in CASES.iterdir() if p.is_dir()):
        meta = json.loads((case / "case.json").read_text()) if (case / "case.json").exists() else {}
        if not set(meta.get("tags", ())) & set(SKIPPED_TAGS):
            names.append(case.name)
    return names


@pytest.fixture(scope="session", params=STRATEGIES)
def conformance_report(request, tmp_path_factory) -> dict:
    require(HARNESS.exists(), f"the differential harness {HARNESS}")
    require(docker_available(), "a running Docker engine")
    work = tmp_path_factory.mktemp(f"difftest-{request.param}")
    cache = work / "cache"
    base = work / "busybox.tar"
    subprocess.run([sys.executable, str(BUSYBOX_RECIPE), str(base), "--tag", BASE_IMAGE], check=True)
    docker("load", "-i", str(base))
    with contextlib.ExitStack() as stack:
        stack.callback(docker, "rmi", BASE_IMAGE, check=False)  # the harness is done with it
        if request.param == "rootless":
            user = stack.enter_context(rootless_user(base))
            user.grant(ranges=True)
            cache = user.home / "cache"
            loaded = user.pybuild(cache, "load", "-i", str(user.work / "base.tar"))
            candidate = (f"{sys.executable} {ROOT / 'tests' / 'rootless_candidate.py'} "
                         f"{user.name} {user.work} {user.python} {cache} ")
        else:
            loaded = pybuild("load", "-i", str(base), env={"PYBUILD_CACHE_DIR": str(cache)})
            candidate = f"{sys.executable} -m builder.cli --isolation {request.param} "
        assert loaded.returncode == 0, loaded.stderr
        cases = _run_harness(work, cache, candidate + "-f {dockerfile} -t {tag} -o {out} "
                                                      "{buildargs} {target} {context}")
    return {"strategy": request.param, "cases": cases}


def _run_harness(work: Path, cache: Path, candidate: str) -> dict:
    report = work / "report.json"
    command = [sys.executable, str(HARNESS), "--cases", str(CASES), "--probe-base", BASE_IMAGE,
               "--strict-lines",
               "--report", str(report), "--work-root", str(work / "stage"), "--candidate", candidate]
    for tag in SKIPPED_TAGS:
        command += ["--skip-tag", tag]
    env = dict(os.environ, PYBUILD_CACHE_DIR=str(cache),
               DIFFTEST_CACHE_DIR=os.environ.get("DIFFTEST_CACHE_DIR", str(ROOT / ".difftest-cache")))
    process = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    if not report.exists():
        pytest.fail(f"difftest produced no report:\n{process.stdout[-3000:]}\n{process.stderr[-3000:]}")
    return {case["case"]: case for case in json.loads(report.read_text())["cases"]}


@pytest.mark.parametrize("case", _case_names())
def test_matches_docker(case: str, conformance_report: dict) -> None:
    result = conformance_report["cases"].get(case)
    assert result is not None, f"{case} was not run"
    known = DIFFERS.get(conformance_report["strategy"], {})
    if case in known:
        assert result["status"] == "FAIL" and known[case] in result["differences"][0]
        return
    assert result["status"] == "PASS", "\n".join(result["differences"]) or result["status"]
