"""RUN gets Docker's default capabilities: as root the bounding, effective and permitted sets are
Docker's 14 (`00000000a80425fb`), as USER nobody the effective and permitted sets are empty, with
no inheritable or ambient ones, exactly as `docker build` gives them, under `namespaces` and
`rootless`. `RUN --security=insecure` keeps the sandbox's privileges."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.rootless_user import rootless_user
from tests.support import build_over, busybox_base, docker_build, image_file

DOCKERFILE = """\
FROM busybox:test
RUN grep -E '^Cap' /proc/self/status > /root.txt
USER nobody
RUN grep -E '^Cap' /proc/self/status > /tmp/nobody.txt
FROM scratch
COPY --from=0 /root.txt /tmp/nobody.txt /
"""
DOCKER_SET = "00000000a80425fb"
NONE = "0000000000000000"


def status(inheritable: str, permitted: str, effective: str, bounding: str) -> str:
    return (f"CapInh:\t{inheritable}\nCapPrm:\t{permitted}\nCapEff:\t{effective}\n"
            f"CapBnd:\t{bounding}\nCapAmb:\t{NONE}\n")


EXPECTED = {"root.txt": status(NONE, DOCKER_SET, DOCKER_SET, DOCKER_SET),
            "nobody.txt": status(NONE, NONE, NONE, DOCKER_SET)}


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return busybox_base(tmp_path_factory.mktemp("base"))


def build(tmp_path: Path, base: Path, dockerfile: str, *options: str) -> Path:
    return build_over(tmp_path, base, dockerfile, *options)[0]


def capabilities(tarball: Path) -> dict[str, str]:
    return {name: image_file(tarball, name).decode() for name in EXPECTED}


def test_namespaces_gives_dockers_capabilities(tmp_path, base):
    assert capabilities(build(tmp_path, base, DOCKERFILE, "--isolation", "namespaces")) \
        == EXPECTED


def test_rootless_gives_dockers_capabilities(base):
    with rootless_user(base) as user:
        user.grant(ranges=True)
        result, _ = user.build(DOCKERFILE)
        assert result.returncode == 0, result.stderr
        assert capabilities(user.output) == EXPECTED


def test_docker_build_gives_the_same(tmp_path, images):
    for name, text in EXPECTED.items():
        assert docker_build(tmp_path / name, images, DOCKERFILE, name) == text


def test_security_insecure_keeps_the_sandboxs_capabilities(tmp_path, base):
    dockerfile = ("FROM busybox:test\nRUN --security=insecure grep -E '^(CapBnd|Seccomp):' "
                  "/proc/self/status > /insecure.txt\n")
    out = build(tmp_path, base, dockerfile, "--isolation", "namespaces",
                "--allow", "security.insecure")
    bounding, seccomp = image_file(out, "/insecure.txt").decode().splitlines()
    assert int(bounding.split()[1], 16) & ~int(DOCKER_SET, 16)  # more than Docker's default
    assert seccomp.split() == ["Seccomp:", "0"]
