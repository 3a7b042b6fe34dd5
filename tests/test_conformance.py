"""Differential conformance: every case of testdata/conformance built by real Docker (BuildKit) and
by pybuild, both loaded into Docker, configs and exported filesystems compared entry by entry.

The comparison is the project's harness, tests/conformance (used here as a library); it runs
once per strategy and session (its JSON report beside the session's other files), and each case
is its own test. The base image of the RUN cases, busybox:test, is made offline by
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
import subprocess
import sys

import pytest

from tests.conformance import Options, load_cases, report, run_corpus
from tests.rootless_user import rootless_user
from tests.support import ROOT, docker, docker_available, pybuild, require

CASES = ROOT / "testdata" / "conformance"
BUSYBOX_RECIPE = ROOT / "testdata" / "images" / "busybox" / "make.py"
BASE_IMAGE = "busybox:test"
SKIPPED_TAGS = ("version-specific", "pybuild-differs")
STRATEGIES = ("namespaces", "chroot", "rootless")
# Where chroot, having no mount namespace, cannot do what Docker does (README, "How RUN runs"):
# what the harness must then say (a deliberate difference: the case's status is DIFFERS).
CHROOT_DIFFERS = {
    "128-error-run-write-etc-hosts": ("candidate succeeded but docker fails",),  # a writable copy
    "132-run-user-supplementary-groups": ("candidate build failed",),  # no /proc to read
    "175-run-hostname-and-hosts": ("/hostname.txt: content differs",),  # no uts namespace
    "176-run-stdin-empty-pipe": ("/stdin-kind.txt: content differs",),  # /dev/stdin needs /proc
    "177-run-dev-mqueue": ("/mqueue.txt: content differs",),  # nothing mounted, no /proc
    "179-run-only-std-fds": ("candidate build failed",),  # no /proc to read
    # RUN --mount needs a mount namespace (README, Known limits)
    **{case: ("RUN --mount needs a mount namespace",) for case in (
        "180-run-mount-cache", "181-run-mount-bind-context", "182-run-mount-tmpfs",
        "183-run-mount-secret", "186-run-mount-bind-from-stage",
        "187-run-mount-bind-from-stage-rw", "188-run-mount-cache-from-stage",
        "189-run-mount-bind-from-image")},
}
# Where the kernel forbids what Docker's root daemon may do: no device nodes in a user namespace
# (every strategy but chroot runs the command in one).
USERNS_DIFFERS = {
    "119-run-mknod-devices": ("candidate build failed",),
    "166-copy-from-run-stage-special-files": ("candidate build failed",),
}
DIFFERS = {"namespaces": USERNS_DIFFERS, "chroot": CHROOT_DIFFERS, "rootless": USERNS_DIFFERS}


def _case_names() -> list[str]:
    return [case.name for case in load_cases(CASES, skip_tags=SKIPPED_TAGS)]


@pytest.fixture(scope="session", params=STRATEGIES)
def conformance_report(request, tmp_path_factory) -> dict:
    require(docker_available(), "a running Docker engine")
    work = tmp_path_factory.mktemp(f"conformance-{request.param}")
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
        candidate += "-f {dockerfile} -t {tag} -o {out} {buildargs} {secrets} {target} {context}"
        run = run_corpus(load_cases(CASES, skip_tags=SKIPPED_TAGS), Options(
            candidate=candidate, probe_base=BASE_IMAGE, strict_lines=True,
            env={"PYBUILD_CACHE_DIR": str(cache)}, cwd=str(ROOT), work_root=work / "stage",
            expected=DIFFERS[request.param]))
        report.write(run, candidate, work / "report.json")
    return {"strategy": request.param, "cases": {result.case.name: result for result in run.results}}


@pytest.mark.parametrize("case", _case_names())
def test_matches_docker(case: str, conformance_report: dict) -> None:
    result = conformance_report["cases"].get(case)
    assert result is not None, f"{case} was not run"
    verdict = result.verdict
    if case in DIFFERS[conformance_report["strategy"]]:
        assert verdict.status == "DIFFERS", "\n".join(verdict.differences) or verdict.status
        return
    assert verdict.status == "PASS", "\n".join(verdict.differences) or verdict.status
