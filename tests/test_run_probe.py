"""What a RUN's process sees of its environment, pybuild against `docker build`: one RUN prints
its signal masks (not SigQ, a count of the user's pending signals), capabilities, NoNewPrivs and Seccomp (/proc/self/status), `ulimit -a`,
`umask`, its sorted environment and `ls /dev`; Docker and each isolation strategy build it, and
every line that differs from Docker's must be listed in ALLOWED with the reason."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.rootless_user import rootless_user
from tests.support import (DockerImages, build_over, busybox_base, docker_available, docker_build,
                           image_file, require)

DOCKERFILE = """\
FROM busybox:test
RUN { grep -E '^(Sig(Pnd|Blk|Ign|Cgt)|ShdPnd|Cap|NoNewPrivs|Seccomp)' /proc/self/status; \\
      ulimit -a | sed 's/^/ulimit /'; echo "umask $(umask)"; env | sort | sed 's/^/env /'; ls /dev | sed 's/^/dev /'; \\
    } > /probe.txt 2>/dev/null; true
FROM scratch
COPY --from=0 /probe.txt /
"""
NO_PROC = "chroot mounts no /proc: the RUN cannot read its status"
LIMITS = "a RUN's limits are those pybuild was started with (README: differences)"
# Per strategy: line key -> why it may differ from Docker's (README: Matches Docker, and where
# it differs).
ALLOWED: dict[str, dict[str, str]] = {
    "namespaces": {},
    # the test user's soft limit (runuser's 1024), not dockerd's
    "rootless": {"ulimit open files                      (-n)": LIMITS},
    "chroot": {**{key: NO_PROC for key in (
        "CapAmb", "CapBnd", "CapEff", "CapInh", "CapPrm", "NoNewPrivs", "Seccomp",
        "Seccomp_filters", "ShdPnd", "SigBlk", "SigCgt", "SigIgn", "SigPnd")}},
}


def parse(text: str) -> dict[str, str]:
    """Probe output as key -> value: `CapEff` -> `00000000a80425fb`, `ulimit -n: file
    descriptors` -> `1048576`, `umask` -> `0022`, `env PATH` -> ..., `dev null` -> ``."""
    lines = {}
    for line in text.splitlines():
        if line.startswith(("env ", "dev ")):
            key, _, value = line.partition("=")
        elif line.startswith(("ulimit ", "umask ")):
            key, _, value = line.rpartition(" ")
        else:
            key, _, value = line.partition(":")
        lines[key.strip()] = value.strip()
    return lines


def differences(ours: str, docker: str) -> dict[str, tuple[str | None, str | None]]:
    mine, theirs = parse(ours), parse(docker)
    return {key: (mine.get(key), theirs.get(key)) for key in sorted(mine.keys() | theirs.keys())
            if mine.get(key) != theirs.get(key)}


@pytest.fixture(scope="module")
def docker_probe(tmp_path_factory) -> str:
    """Docker's probe output, made once for every strategy."""
    require(docker_available(), "a running Docker engine")
    images = DockerImages()
    try:
        return docker_build(tmp_path_factory.mktemp("docker"), images, DOCKERFILE, "probe.txt")
    finally:
        images.cleanup()


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return busybox_base(tmp_path_factory.mktemp("base"))


def probe(tmp_path: Path, base: Path, strategy: str) -> str:
    if strategy == "rootless":
        with rootless_user(base) as user:
            user.grant(ranges=True)
            result, _ = user.build(DOCKERFILE)
            assert result.returncode == 0, result.stderr
            return image_file(user.output, "/probe.txt").decode()
    out, _ = build_over(tmp_path, base, DOCKERFILE, "--isolation", strategy)
    return image_file(out, "/probe.txt").decode()


@pytest.mark.parametrize("strategy", sorted(ALLOWED))
def test_run_sees_what_docker_build_gives(tmp_path, base, docker_probe, strategy):
    found = differences(probe(tmp_path, base, strategy), docker_probe)
    assert sorted(found) == sorted(ALLOWED[strategy]), "\n".join(map(str, found.items()))
