"""RUN runs under Docker's default seccomp profile: what the profile refuses fails with EPERM
(ENOSYS for clone3, as Docker has it), what it allows works, exactly as in `docker build`; and
`--security-opt seccomp=unconfined` lifts the filter. Tiny programs made by tests/syscalls.py
make the raw system calls, so the test needs no compiler and no C library in the image."""
from __future__ import annotations

from pathlib import Path

import pytest

from builder.sandbox import capabilities, seccomp, seccomp_profile
from tests.rootless_user import rootless_user
from tests.support import build_over, busybox_base, docker_build, image_file, pybuild, require
from tests.syscalls import Call, dockerfile_lines, supported

CLONE_NEWUSER = 0x10000000
ADDR_NO_RANDOMIZE = 0x0040000
KEY_SPEC_PROCESS_KEYRING = -2
# (call, its exit status under Docker's profile, and without a filter); x86-64 numbers. Without
# a filter the calls fail only for their null arguments (EFAULT 14, EINVAL 22) or succeed (0).
CALLS = [
    (Call("unshare", 272, (CLONE_NEWUSER,)), 1, 0),
    (Call("mount", 165), 1, 14),
    (Call("keyctl", 250, (0, KEY_SPEC_PROCESS_KEYRING, 1)), 1, 0),
    (Call("add_key", 248), 1, 14),
    (Call("perf_event_open", 298, (0, 0, -1)), 1, 14),
    (Call("setns", 308), 1, 22),
    (Call("personality", 135, (ADDR_NO_RANDOMIZE,)), 1, 0),   # an argument rule
    (Call("clone3", 435), 38, 22),                           # ENOSYS, so libc falls back
    (Call("chroot", 161), 14, 14),                           # allowed with CAP_SYS_CHROOT
    (Call("getpid", 39), 0, 0),
]
DOCKERFILE = ("FROM busybox:test\n" + dockerfile_lines([call for call, _, _ in CALLS]) + """\
RUN for c in /calls/*; do "$c"; echo "${c##*/} $?"; done > /calls.txt \\
 && grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status >> /calls.txt
FROM scratch
COPY --from=0 /calls.txt /
""")


def expected(column: int, seccomp: int) -> str:
    lines = sorted(f"{call.name} {row[column]}" for call, *row in CALLS)
    return "\n".join(lines + ["NoNewPrivs:\t0", f"Seccomp:\t{seccomp}"]) + "\n"


CONFINED, UNCONFINED = expected(0, 2), expected(1, 0)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    require(supported(), "an x86-64 machine (the test's programs are x86-64 code)")
    return busybox_base(tmp_path_factory.mktemp("base"))


def build(tmp_path: Path, base: Path, *options: str) -> tuple[str, str]:
    """The /calls.txt a pybuild build writes, and its log."""
    out, result = build_over(tmp_path, base, DOCKERFILE, *options)
    return image_file(out, "/calls.txt").decode(), result.stderr


def test_run_cannot_call_what_dockers_profile_forbids(tmp_path, base):
    calls, log = build(tmp_path, base, "--isolation", "namespaces")
    assert calls == CONFINED
    assert "seccomp" not in log


def test_unconfined_lifts_the_filter(tmp_path, base):
    calls, _ = build(tmp_path, base, "--isolation", "namespaces",
                     "--security-opt", "seccomp=unconfined")
    assert calls == UNCONFINED


def test_docker_build_gives_the_same(tmp_path, base, images):
    assert docker_build(tmp_path, images, DOCKERFILE, "calls.txt") == CONFINED


def test_rootless_has_the_filter_too(base):
    with rootless_user(base) as user:
        user.grant(ranges=True)
        result, _ = user.build(DOCKERFILE)
        assert result.returncode == 0, result.stderr
        assert image_file(user.output, "/calls.txt").decode() == CONFINED


@pytest.mark.parametrize("option", ["seccomp=/etc/profile.json", "apparmor=unconfined"])
def test_other_security_options_are_usage_errors(tmp_path, option):
    result = pybuild("--security-opt", option, "-o", str(tmp_path / "x.tar"), str(tmp_path))
    assert result.returncode == 2
    assert f"--security-opt {option}: only seccomp=unconfined" in result.stderr


def _calls(mask: int, kernel: tuple[int, ...] = (6, 1)) -> dict[str, set]:
    """x86-64's rules for a process with `mask`: name -> its (action, argument conditions)."""
    found: dict[str, set] = {}
    for rule in seccomp.rules("x86_64", mask, kernel):
        found.setdefault(rule.name, set()).add((rule.action, rule.args))
    return found


ALLOW, ENOSYS = 0x7FFF0000, 0x00050000 | 38
SYS_ADMIN = capabilities.DOCKER_MASK | 1 << capabilities.NUMBERS["CAP_SYS_ADMIN"]


@pytest.mark.parametrize("mask, name, expected", [
    (capabilities.DOCKER_MASK, "chroot", {(ALLOW, ())}),
    (capabilities.DOCKER_MASK, "mount", None),
    (capabilities.DOCKER_MASK, "ptrace", {(ALLOW, ())}),
    (capabilities.DOCKER_MASK, "arch_prctl", {(ALLOW, ())}),
    (capabilities.DOCKER_MASK, "s390_runtime_instr", None),
    (capabilities.DOCKER_MASK, "clone", {(ALLOW, ((0, 7, 0x7E020000, 0),))}),
    (capabilities.DOCKER_MASK, "clone3", {(ENOSYS, ())}),
    (SYS_ADMIN, "clone", {(ALLOW, ())}),
    (SYS_ADMIN, "clone3", {(ALLOW, ())}),
    (SYS_ADMIN, "mount", {(ALLOW, ())}),
    (0, "chroot", None),
])
def test_rules_follow_the_capabilities(mask, name, expected):
    assert _calls(mask).get(name) == expected


def test_ptrace_only_from_linux_4_8():
    assert "ptrace" not in _calls(capabilities.DOCKER_MASK, (4, 7))


def test_the_tables_name_only_known_machines_and_capabilities():
    machines = set(seccomp_profile.ON_MACHINE) | {
        machine for checked in seccomp_profile.CHECKED for machine in checked.machines}
    assert machines <= set(seccomp._ARCHES)
    needed = (set(seccomp_profile.WITH_CAPABILITY) | set(seccomp_profile.ENOSYS_UNLESS.values())
              | {checked.unless for checked in seccomp_profile.CHECKED if checked.unless})
    assert needed <= set(capabilities.NUMBERS)
    assert list(seccomp_profile.EVERYONE) == sorted(set(seccomp_profile.EVERYONE))
