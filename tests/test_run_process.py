"""RUN's process is the one `docker build` starts, under every isolation strategy: every signal
at its default and none blocked (pybuild's Python ignores SIGPIPE and SIGXFSZ, and an ignored
signal survives exec), so pipelines end as under Docker; and a base whose config has no PATH
(as `docker import` makes them) gets BuildKit's default PATH, in RUN and in the config."""
from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from builder.sandbox.chroot import probe as chroot_probe
from builder.plan.state import DEFAULT_PATH
from tests.rootless_user import rootless_user
from tests.support import ROOT, DockerImages, busybox_base, docker, docker_available, pybuild, require

IMPORTED = "busybox:imported"
DOCKERFILE = f"""\
FROM {IMPORTED}
RUN if [ -r /proc/self/status ]; then grep -E '^Sig(Blk|Ign)' /proc/self/status; \\
    else echo no-proc; fi > /sig.txt; \\
    for s in PIPE XFSZ; do sh -c "kill -$s \\$\\$"; echo "$s $?"; done > /kill.txt 2>&1
RUN timeout 20 sh -c 'yes | head -n 2' > /yes.txt; echo "$?" >> /yes.txt; \\
    set -o pipefail; yes 2> /yes-stderr.txt | head -n 1 > /dev/null; echo "$?" > /pipefail.txt
RUN echo "$PATH" > /path.txt
ENV PATH=/opt/bin:$PATH
RUN echo "$PATH" > /path2.txt
"""
STRATEGIES = ("namespaces", "chroot", "rootless")


def imported_base(directory: Path, tag: str = IMPORTED) -> Path:
    """busybox with an empty config (no Env, no PATH), as `docker import` makes images."""
    busybox_base(directory)  # the same requirements: busybox-static and a sandbox
    archive = directory / "imported.tar"
    subprocess.run([sys.executable, str(ROOT / "testdata/images/busybox/make.py"), str(archive),
                    "--tag", tag, "--imported"], check=True)
    return archive


def read_image(tarball: Path) -> tuple[dict, dict[str, str]]:
    """The image config and the text of every top-level *.txt file its layers write."""
    files: dict[str, str] = {}
    with tarfile.open(tarball) as archive:
        manifest = json.load(archive.extractfile("manifest.json"))[0]
        config = json.load(archive.extractfile(manifest["Config"]))
        for layer in manifest["Layers"]:
            with tarfile.open(fileobj=archive.extractfile(layer)) as entries:
                for entry in entries:
                    if entry.isfile() and "/" not in entry.name and entry.name.endswith(".txt"):
                        files[entry.name] = entries.extractfile(entry).read().decode()
    return config, files


@pytest.fixture(scope="module", params=STRATEGIES)
def built(request, tmp_path_factory) -> tuple[str, dict, dict[str, str]]:
    """DOCKERFILE built under one strategy: the strategy, the image config, the files."""
    work = tmp_path_factory.mktemp(f"process-{request.param}")
    base = imported_base(work)
    if request.param == "rootless":
        with rootless_user(base) as user:
            user.grant(ranges=True)
            result, _ = user.build(DOCKERFILE)
            assert result.returncode == 0, result.stderr
            assert "sandbox: rootless" in result.stderr
            (tarball,) = user.home.glob("*.tar")
            return request.param, *read_image(tarball)
    if request.param == "chroot":
        require(chroot_probe(str(work)) is None, "the chroot sandbox")
    context = work / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(DOCKERFILE)
    env = {"PYBUILD_CACHE_DIR": str(work / "cache")}
    assert pybuild("load", "-i", str(base), env=env).returncode == 0
    result = pybuild("--isolation", request.param, "-o", str(work / "image.tar"), str(context),
                     env=env)
    assert result.returncode == 0, result.stderr
    assert f"sandbox: {request.param}" in result.stderr
    return request.param, *read_image(work / "image.tar")


def test_no_signal_is_ignored_or_blocked(built):
    strategy, _, files = built
    if strategy == "chroot":  # no /proc: the kills below still show the dispositions
        assert files["sig.txt"] == "no-proc\n"
    else:
        assert files["sig.txt"] == "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n"
    assert files["kill.txt"].splitlines()[-2:] == ["File size limit exceeded", "XFSZ 153"]
    assert files["kill.txt"].splitlines()[0] == "PIPE 141"


def test_pipelines_end_by_sigpipe(built):
    _, _, files = built
    assert files["yes.txt"] == "y\ny\n0\n"
    assert files["pipefail.txt"] == "141\n"  # yes killed by SIGPIPE, as under Docker
    assert files["yes-stderr.txt"] == ""  # not "Broken pipe": it never saw EPIPE


def test_a_base_without_path_gets_the_default_path(built):
    _, config, files = built
    assert files["path.txt"] == DEFAULT_PATH + "\n"
    assert files["path2.txt"] == f"/opt/bin:{DEFAULT_PATH}\n"
    assert config["config"]["Env"] == [f"PATH=/opt/bin:{DEFAULT_PATH}"]
    assert config["config"].get("WorkingDir", "") == ""  # only scratch gets "/"


@pytest.mark.parametrize("steps", ["LABEL only=metadata", "ENV FOO=bar X=$PATH",
                                   "ENV PATH=/opt/bin:$PATH\nRUN true"])
def test_default_path_in_the_config_as_docker_writes_it(tmp_path, steps):
    """The configs Docker and pybuild write on an imported base, with and without a RUN."""
    require(docker_available(), "a running Docker engine")
    images = DockerImages()
    try:
        tag = images.name("pybuild-imported")
        base = imported_base(tmp_path, tag)
        docker("load", "-i", str(base))
        context = tmp_path / "context"
        context.mkdir()
        (context / "Dockerfile").write_text(f"FROM {tag}\n{steps}\n")
        reference = images.name("pybuild-imported-ref")
        docker("build", "--no-cache", "--network", "none", "-t", reference, str(context))
        env = {"PYBUILD_CACHE_DIR": str(tmp_path / "cache")}
        assert pybuild("load", "-i", str(base), env=env).returncode == 0
        result = pybuild("-o", str(tmp_path / "image.tar"), str(context), env=env)
        assert result.returncode == 0, result.stderr
        config, _ = read_image(tmp_path / "image.tar")
        assert config["config"]["Env"] == images.inspect(reference)["Config"]["Env"]
    finally:
        images.cleanup()
