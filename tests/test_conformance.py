"""Differential conformance: every case of testdata/conformance built by real Docker (BuildKit) and
by pybuild, both loaded into Docker, configs and exported filesystems compared entry by entry.

The comparison is ../shared/tools/difftest.py; it runs once per session and each case is its own
test. The base image of the RUN cases, busybox:test, is made offline by
testdata/images/busybox/make.py and loaded into both Docker and pybuild's store. Cases tagged `version-specific` (newer BuildKit than this machine's Docker 20.10 differs, and
pybuild follows the newer one) or `pybuild-differs` (a deliberate difference, listed in the
README) are left to tests/test_differences.py, which asserts pybuild's side of them.

The corpus runs once per isolation strategy a root machine has (`namespaces`, and `chroot`, what
unprivileged containers get): every strategy must make Docker's images. (`rootless` needs a
user without privileges; tests/test_isolation.py shows it makes the namespaces images.)
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support import ROOT, SHARED, docker, docker_available, pybuild, require

CASES = ROOT / "testdata" / "conformance"
HARNESS = SHARED / "tools" / "difftest.py"
BUSYBOX_RECIPE = ROOT / "testdata" / "images" / "busybox" / "make.py"
BASE_IMAGE = "busybox:test"
SKIPPED_TAGS = ("version-specific", "pybuild-differs")
STRATEGIES = ("namespaces", "chroot")
# Where chroot, having no mount namespace, cannot do what Docker does (README, "How RUN runs"):
# what the harness must then say.
CHROOT_DIFFERS = {
    "128-error-run-write-etc-hosts": "candidate succeeded but docker fails",  # a writable copy
    "132-run-user-supplementary-groups": "candidate build failed",  # no /proc to read
}


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
    report = work / "report.json"
    cache = work / "cache"
    base = work / "busybox.tar"
    subprocess.run([sys.executable, str(BUSYBOX_RECIPE), str(base), "--tag", BASE_IMAGE], check=True)
    docker("load", "-i", str(base))
    loaded = pybuild("load", "-i", str(base), env={"PYBUILD_CACHE_DIR": str(cache)})
    assert loaded.returncode == 0, loaded.stderr
    candidate = (f"{sys.executable} -m builder.cli --isolation {request.param} -f {{dockerfile}} "
                 "-t {tag} -o {out} {buildargs} {target} {context}")
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
    cases = {case["case"]: case for case in json.loads(report.read_text())["cases"]}
    return {"strategy": request.param, "cases": cases}


@pytest.mark.parametrize("case", _case_names())
def test_matches_docker(case: str, conformance_report: dict) -> None:
    result = conformance_report["cases"].get(case)
    assert result is not None, f"{case} was not run"
    if conformance_report["strategy"] == "chroot" and case in CHROOT_DIFFERS:
        assert result["status"] == "FAIL" and CHROOT_DIFFERS[case] in result["differences"][0]
        return
    assert result["status"] == "PASS", "\n".join(result["differences"]) or result["status"]
