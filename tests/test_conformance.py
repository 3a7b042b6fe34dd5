"""Differential conformance: every case of testdata/conformance built by real Docker (BuildKit) and
by pybuild, both loaded into Docker, configs and exported filesystems compared entry by entry.

The comparison is the project's harness, tests/conformance (used here as a library); it runs once
per strategy and session over the cases the session selected (`-k` builds only those; its JSON
report beside the session's other files), and each case is its own test. The base image of the RUN
cases, busybox:test, is made offline by testdata/images/busybox/make.py and loaded into both Docker
and pybuild's store. Cases tagged `version-specific` (newer BuildKit than this machine's Docker
20.10 differs, and pybuild follows the newer one) or `pybuild-differs` (a deliberate difference,
listed in the README) are left to tests/test_differences.py, which asserts pybuild's side of them.

Cases tagged `debian` build FROM the Debian base images of tests/debian_base.py (debootstrap,
prepared once per machine by .ci/setup; under CI a missing preparation fails) and run apart:
the apt ones install from a local repository the test serves on 127.0.0.1, whose address
reaches both builders as the build arg APT_REPO.

The corpus runs once per isolation strategy: `namespaces`, `chroot` (what unprivileged
containers get) and `rootless`, as a user the test creates with subordinate ids
(tests/rootless_user.py; tests/rootless_candidate.py runs pybuild as that user): every strategy
must make Docker's images.
"""
from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conformance import Options, Result, load_cases, report, run_corpus
from tests.debian_base import BASE as DEBIAN_BASE, NO_PATH_BASE, AptRepo, apt_repo
from tests.rootless_user import rootless_user
from tests.support import ROOT, docker, docker_available, pybuild, require

CASES = ROOT / "testdata" / "conformance"
BUSYBOX_RECIPE = ROOT / "testdata" / "images" / "busybox" / "make.py"
BASE_IMAGE = "busybox:test"
SKIPPED_TAGS = ("version-specific", "pybuild-differs")
DEBIAN = "debian"  # cases FROM the Debian base images (tests/debian_base.py), run apart
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
        "189-run-mount-bind-from-image", "196-debian-apt-cache-mount-pattern")},
}
# Where the kernel forbids what Docker's root daemon may do: no device nodes in a user namespace
# (every strategy but chroot runs the command in one).
USERNS_DIFFERS = {
    "119-run-mknod-devices": ("candidate build failed",),
    "166-copy-from-run-stage-special-files": ("candidate build failed",),
}
DIFFERS = {"namespaces": USERNS_DIFFERS, "chroot": CHROOT_DIFFERS, "rootless": USERNS_DIFFERS}


def case_names(tag: str | None = None) -> list[str]:
    """The cases the busybox run takes (tag None) or those tagged `tag`."""
    cases = load_cases(CASES, skip_tags=SKIPPED_TAGS)
    return [case.name for case in cases if (tag in case.tags if tag else DEBIAN not in case.tags)]


def _run(strategy: str, work: Path, archive: Path, base: str, cases: list[str],
         build_args: dict[str, str] | None = None, base_key: str = "") -> dict:
    """The harness over `cases` with pybuild under `strategy` as the candidate, the base images
    of `archive` (already in Docker) loaded into its store; the results by case."""
    cache = work / "cache"
    with contextlib.ExitStack() as stack:
        if strategy == "rootless":
            user = stack.enter_context(rootless_user(archive))
            user.grant(ranges=True)
            cache = user.home / "cache"
            loaded = user.pybuild(cache, "load", "-i", str(user.work / "base.tar"))
            candidate = (f"{sys.executable} {ROOT / 'tests' / 'rootless_candidate.py'} "
                         f"{user.name} {user.work} {user.python} {cache} ")
        else:
            loaded = pybuild("load", "-i", str(archive), env={"PYBUILD_CACHE_DIR": str(cache)})
            candidate = f"{sys.executable} -m builder.cli --isolation {strategy} "
        assert loaded.returncode == 0, loaded.stderr
        candidate += ("-f {dockerfile} -t {tag} -o {out} {buildargs} {secrets} {network} {target} "
                      "{context}")
        selected = [case for case in load_cases(CASES) if case.name in set(cases)]
        # the probe only gives meaning to an error case's failure
        probe = base if any(case.expect == "error" for case in selected) else None
        run = run_corpus(selected, Options(
            candidate=candidate, probe_base=probe, strict_lines=True,
            env={"PYBUILD_CACHE_DIR": str(cache)}, cwd=str(ROOT), work_root=work / "stage",
            expected=DIFFERS[strategy], build_args=build_args or {}, base_key=base_key))
        report.write(run, candidate, work / "report.json")
    return {"strategy": strategy, "cases": {result.case.name: result for result in run.results}}


def _selected(request: pytest.FixtureRequest, test: str) -> list[str]:
    """The cases of `test` this session runs with the fixture's strategy (what -k and friends
    left), so that a run of some cases builds only those. Other files' tests of that name are
    not parametrized by case."""
    return [item.callspec.params["case"] for item in request.session.items
            if getattr(item, "originalname", None) == test and hasattr(item, "callspec")
            and item.callspec.params.get(request.fixturename) == request.param]


@pytest.fixture(scope="session", params=STRATEGIES)
def conformance_report(request, tmp_path_factory) -> dict:
    require(docker_available(), "a running Docker engine")
    work = tmp_path_factory.mktemp(f"conformance-{request.param}")
    base = work / "busybox.tar"
    subprocess.run([sys.executable, str(BUSYBOX_RECIPE), str(base), "--tag", BASE_IMAGE], check=True)
    docker("load", "-i", str(base))
    try:
        return _run(request.param, work, base, BASE_IMAGE,
                    _selected(request, "test_matches_docker"))
    finally:
        docker("rmi", BASE_IMAGE, check=False)  # the harness is done with it


@pytest.fixture(scope="session")
def debian_images(debian_archive: Path) -> Iterator[tuple[Path, str]]:
    """The Debian base images (debian_base.py), loaded into Docker, and their IDs (Docker's
    cached results are only good for the same bases)."""
    require(docker_available(), "a running Docker engine")
    archive = debian_archive
    docker("load", "-i", str(archive))
    try:
        ids = [docker("image", "inspect", "--format", "{{.Id}}", name).stdout.decode().strip()
               for name in (DEBIAN_BASE, NO_PATH_BASE)]
        yield archive, " ".join(ids)
    finally:
        docker("rmi", DEBIAN_BASE, NO_PATH_BASE, check=False)


@pytest.fixture(scope="session")
def local_apt_repo() -> Iterator[AptRepo]:
    with apt_repo() as repo:
        yield repo


@pytest.fixture(scope="session", params=STRATEGIES)
def debian_report(request, tmp_path_factory, debian_images, local_apt_repo) -> dict:
    archive, base_key = debian_images
    return _run(request.param, tmp_path_factory.mktemp(f"conformance-debian-{request.param}"),
                archive, DEBIAN_BASE, _selected(request, "test_debian_case_matches_docker"),
                {"APT_REPO": local_apt_repo.url},
                base_key)


def wrong_verdict(result: Result, strategy: str) -> str | None:
    """What is wrong with a case's verdict under `strategy` (DIFFERS where DIFFERS says, else
    PASS), or None."""
    verdict = result.verdict
    wanted = "DIFFERS" if result.case.name in DIFFERS[strategy] else "PASS"
    if verdict.status == wanted:
        return None
    return "\n".join(verdict.differences) or verdict.status


def _assert_verdict(case: str, report_: dict) -> None:
    result = report_["cases"].get(case)
    assert result is not None, f"{case} was not run"
    problem = wrong_verdict(result, report_["strategy"])
    assert problem is None, problem


@pytest.mark.parametrize("case", case_names())
def test_matches_docker(case: str, conformance_report: dict) -> None:
    _assert_verdict(case, conformance_report)


@pytest.mark.parametrize("case", case_names(DEBIAN))
def test_debian_case_matches_docker(case: str, debian_report: dict) -> None:
    _assert_verdict(case, debian_report)
