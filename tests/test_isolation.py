"""The isolation strategies against the real kernel: `chroot` and `rootless` give the very image
`namespaces` gives, as root on the host, as a non-root user (with and without subordinate ids),
and inside an unprivileged Docker container with the default seccomp profile and capabilities.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from builder.errors import BuildError
from builder.sandbox.spec import RunSpec
from builder.sandbox.chroot import ChrootSandbox, probe as chroot_probe
from layers.unpack import apply_layer
from tests.conformance import Options, load_cases, report, run_corpus
from tests.registry_support import Registry, registry  # noqa: F401  (a fixture)
from tests.rootless_user import EPOCH, SUBID_FILES, rootless_user
from tests.test_conformance import (BASE_IMAGE, CASES, DIFFERS, case_names,
                                    wrong_verdict)
from tests.support import (ROOT, DockerImages, busybox_base, docker, docker_available,
                           interrupted_after, pybuild, require)

SINGLE_ID_STEPS = """\
FROM busybox:test
RUN mkdir -p /data/sub /data/remade && echo one > /data/one && echo two > /data/sub/two \\
 && echo three > /data/remade/three && ln -s one /data/link && chmod 640 /data/one
RUN rm /etc/group && rm -rf /data/remade && mkdir /data/remade \\
 && chmod 4755 /data/sub/two && mkdir -p /opt/a/b && ln -s /data/sub /opt/a/sub
"""
DOCKERFILE = SINGLE_ID_STEPS + """\
RUN chown 1000:1000 /data/one && chown -R 1000:1000 /opt/a && touch /home/app/new
USER app
RUN echo mine > /home/app/mine
WORKDIR /srv/work
RUN pwd > /tmp/where
"""


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return busybox_base(tmp_path_factory.mktemp("base"))


def build(work: Path, base: Path, dockerfile: str, *options: str) -> tuple[str, str]:
    """Build `dockerfile` as root with its own cache; returns the image ID and the log."""
    context = work / "context"
    context.mkdir(parents=True, exist_ok=True)
    (context / "Dockerfile").write_text(dockerfile)
    env = {"PYBUILD_CACHE_DIR": str(work / "cache"), "SOURCE_DATE_EPOCH": EPOCH}
    assert pybuild("load", "-i", str(base), env=env).returncode == 0
    result = pybuild("--iidfile", str(work / "iid"), "-o", str(work / "image.tar"), *options,
                     str(context), env=env)
    assert result.returncode == 0, result.stderr
    return (work / "iid").read_text(), result.stderr


@pytest.fixture(scope="module")
def reference(tmp_path_factory, base) -> dict[str, str]:
    """The image IDs of the namespaces builds, the reference for the other strategies."""
    return {name: build(tmp_path_factory.mktemp(name), base, text, "--isolation", "namespaces")[0]
            for name, text in (("full", DOCKERFILE), ("single-id", SINGLE_ID_STEPS))}


# -- chroot on the host ---------------------------------------------------------------------------

def test_chroot_gives_the_namespaces_image(tmp_path, base, reference):
    require(chroot_probe(str(tmp_path)) is None, "the chroot sandbox")
    image, log = build(tmp_path, base, DOCKERFILE, "--isolation", "chroot")
    assert "sandbox: chroot (" in log
    assert image == reference["full"]


def test_a_forced_strategy_that_cannot_work_fails(tmp_path, base):
    require(os.geteuid() == 0, "root")
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM busybox:test\nRUN true\n")
    env = {"PYBUILD_CACHE_DIR": str(tmp_path / "cache")}
    assert pybuild("load", "-i", str(base), env=env).returncode == 0
    out = str(tmp_path / "out.tar")
    result = pybuild("--isolation", "rootless", "-o", out, str(context), env=env)
    assert result.returncode == 1
    assert "ERROR: --isolation rootless cannot work here: running as root" in result.stderr
    result = pybuild("--isolation", "chroot", "--network", "none", "-o", out, str(context),
                     env=env)
    assert result.returncode == 1
    assert "RUN --network=none needs a network namespace" in result.stderr


@pytest.fixture
def root(tmp_path, base) -> Path:
    """The busybox image unpacked into a plain directory, as the walk-diff path materializes it,
    with an /etc/hosts and a /dev of its own."""
    require(chroot_probe(str(tmp_path)) is None, "the chroot sandbox")
    directory = tmp_path / "scratch" / "root"
    directory.mkdir(parents=True)
    with tarfile.open(base) as archive:
        layer = json.load(archive.extractfile("manifest.json"))[0]["Layers"][0]
        apply_layer(archive.extractfile(layer), str(directory))
    (directory / "etc" / "hosts").write_text("image's own\n")
    (directory / "dev").mkdir()
    (directory / "dev" / "keep").write_text("image's own\n")
    return directory


def chroot_run(root: Path, script: str, **options) -> tuple[int, str]:
    chunks: list[bytes] = []
    spec = RunSpec(lowerdirs=(), upperdir=str(root), workdir="", scratch=str(root.parent),
                   argv=("/bin/sh", "-c", script), env=("PATH=/bin:/usr/bin", "HOME=/root"),
                   **options)
    status = ChrootSandbox().run(spec, chunks.append)
    return status, b"".join(chunks).decode()


def snapshot(root: Path) -> dict[str, tuple]:
    return {str(path.relative_to(root)): (path.lstat().st_mode, path.lstat().st_mtime_ns,
                                          path.lstat().st_uid)
            for path in [root, *root.rglob("*")]}


@pytest.mark.parametrize("script, status", [("true", 0), ("exit 3", 3), ("no-such-command", 127),
                                            ("kill -9 $$", 137)])
def test_chroot_exit_status(root, script, status):
    assert chroot_run(root, script)[0] == status


def test_chroot_sees_its_own_files_and_leaves_none(root):
    before = snapshot(root)
    status, output = chroot_run(root, "echo out; echo err >&2; cat /etc/hosts;"
                                " ls /proc | wc -l; echo x > /dev/null; cat /dev/keep;"
                                " echo gone > /dev/extra; id -u; pwd", uid=1000, gid=1000,
                                cwd="/home/app")
    assert status == 0, output
    lines = output.splitlines()
    assert lines[:2] == ["out", "err"]
    assert "127.0.0.1\tlocalhost buildkitsandbox" in lines  # generated hosts, as BuildKit's
    assert "0" in lines  # no /proc mounted: nothing of the host's processes
    assert "cat: can't open '/dev/keep': No such file or directory" in lines  # the sandbox's
    assert lines[-2:] == ["1000", "/home/app"]
    assert snapshot(root) == before
    assert (root / "etc" / "hosts").read_text() == "image's own\n"


def test_chroot_keeps_what_the_command_changes(root):
    status, output = chroot_run(root, "echo new > /etc/motd && rm /etc/passwd && mkdir /work",
                                cwd="/made/for/run")
    assert status == 0, output
    assert (root / "etc" / "motd").read_text() == "new\n"
    assert not (root / "etc" / "passwd").exists()
    assert sorted(p.name for p in root.iterdir() if p.name in ("work", "made", "dev", "proc")) == \
        ["dev", "made", "work"]
    assert (root / "dev" / "keep").exists() and not (root / "dev" / "null").exists()


def test_chroot_orphans_die_with_the_command(root):
    status, _ = chroot_run(root, "sleep 6023 & echo started")
    assert status == 0
    assert not _running("sleep 6023")


def test_chroot_interrupt_kills_the_command_and_restores_the_root(root):
    before = snapshot(root)
    with interrupted_after(1.0), pytest.raises(KeyboardInterrupt):
        chroot_run(root, "sleep 3029")
    assert not _running("sleep 3029")
    assert snapshot(root) == before


def test_chroot_refuses_network_none(root):
    with pytest.raises(BuildError, match="network namespace"):
        chroot_run(root, "true", network="none")


def _running(pattern: str) -> bool:
    return subprocess.run(["pgrep", "-f", pattern], capture_output=True).returncode == 0


# -- rootless, as a user the test creates -------------------------------------------------------

@pytest.fixture(scope="module")
def user(base):
    with rootless_user(base) as made:
        yield made


def test_rootless_with_subordinate_ids_gives_the_root_image(user, reference):
    user.grant(ranges=True)
    result, image = user.build(DOCKERFILE)
    assert result.returncode == 0, result.stderr
    assert "sandbox: rootless (not root: a user namespace maps uids 0 -> " in result.stderr
    assert "single-id" not in result.stderr
    assert image == reference["full"]


def test_rootless_with_a_single_id_map_builds_and_warns(user, reference):
    user.grant(ranges=False)
    result, image = user.build(SINGLE_ID_STEPS)
    assert result.returncode == 0, result.stderr
    assert "sandbox: rootless (" in result.stderr
    assert "WARNING: rootless with a single-id map" in result.stderr
    assert image == reference["single-id"]
    result, _ = user.build("FROM busybox:test\nRUN touch /x && chown 1000 /x\n")
    assert result.returncode == 1
    assert "Invalid argument" in result.stderr


def test_subid_files_come_back_exactly(base):
    before = {path: Path(path).read_bytes() if os.path.exists(path) else None
              for path in SUBID_FILES}
    with rootless_user(base) as made:
        made.grant(ranges=True)
    assert {path: Path(path).read_bytes() if os.path.exists(path) else None
            for path in SUBID_FILES} == before


# -- inside an unprivileged Docker container ----------------------------------------------------

DELETIONS = """\
FROM busybox:test
RUN mkdir -p /d/sub/deep /keep && echo a > /d/a && echo b > /d/sub/b && echo c > /d/sub/deep/c \\
 && ln /d/a /d/hard && touch /keep/k && echo f > /d/todir
RUN rm /etc/group /d/hard && rm -rf /d/sub/deep /bin/ls && echo again > /d/a
RUN rm -rf /d/sub && mkdir /d/sub && echo new > /d/sub/new && rm /etc/passwd \\
 && echo back > /etc/passwd && rm /d/todir && mkdir /d/todir
COPY f /d/f
RUN rm /d/f && ln -s /keep /d/f && chmod 700 /keep && echo x >> /d/a && ln /d/a /d/a2
RUN echo y >> /d/a2 && rm -rf /usr && mkdir /usr && ls /d > /d/list
FROM busybox:test AS other
RUN rm -rf /home && mkdir /home && echo s > /home/s
FROM busybox:test
COPY --from=0 /d /d
COPY --from=other /home /other
RUN rm -rf /d/sub /other/s && echo done > /d/done
"""
NO_RUN = "FROM busybox:test\nCOPY f /f\nENV A=1\n"


@pytest.fixture(scope="module")
def runner(tmp_path_factory) -> Iterator[tuple[str, list[str]]]:
    """A Docker image for jobs as CI runners start them (its root is the busybox image;
    pybuild, its Python and the host's libraries come in through read-only bind mounts), and
    those mounts."""
    require(docker_available(), "a Docker engine")
    images = DockerImages()
    image = images.name("pybuild-isolation-runner")
    archive = tmp_path_factory.mktemp("runner") / "runner.tar"
    subprocess.run([sys.executable, str(ROOT / "testdata/images/busybox/make.py"), str(archive),
                    "--tag", image], check=True)
    docker("load", "-i", str(archive))
    import lark
    import zstandard
    python = os.path.realpath(sys.executable)
    shared = {str(ROOT), sys.base_prefix, sys.prefix, os.path.dirname(python),
              str(Path(lark.__file__).parent), str(Path(zstandard.__file__).parent)}
    shared |= {path for path in ("/lib", "/lib64", "/usr/lib", "/usr/lib64")
               if os.path.exists(path)}
    try:
        yield image, [argument for path in sorted(shared) for argument in ("-v", f"{path}:{path}:ro")]
    finally:
        images.cleanup()


JOB_ENVIRONMENT = ("-e", f"PYTHONPATH={ROOT}", "-e", "PYTHONDONTWRITEBYTECODE=1",
                   "-e", "HOME=/root")


def in_container(runner, images, job: Path, script: str, *options: str,
                 cache: str | None = None, user: str | None = None,
                 network: str = "none") -> tuple[int, str]:
    """Run `script` (with `pybuild` standing for the CLI) in a container with Docker's default
    seccomp profile and capabilities and no network (unless `network` says), `job` mounted as
    /job, as `user` (else root); the cache where `cache` says, else in the container's own root
    filesystem (overlayfs). Returns the exit status and the log."""
    image, mounts = runner
    python = os.path.realpath(sys.executable)
    environment = [*JOB_ENVIRONMENT, "-e", f"SOURCE_DATE_EPOCH={EPOCH}"]
    if user is not None:
        if not _reachable_by_all(python):  # a pyenv under /root: its copy where anyone may look
            require(sys.prefix == sys.base_prefix and python.startswith(sys.base_prefix + "/"),
                    f"a Python any user can run (not {python})")
            relocated = "/opt/pybuild-python"
            python = relocated + python[len(sys.base_prefix):]
            mounts = [*mounts, "-v", f"{sys.base_prefix}:{relocated}:ro"]
            environment += ["-e", f"LD_LIBRARY_PATH={relocated}/lib"]
        options += ("--user", user)
    name = f"pybuild-isolation-{uuid.uuid4().hex[:10]}"
    images.containers.append(name)
    if cache:
        environment += ["-e", f"PYBUILD_CACHE_DIR={cache}"]
    result = docker("run", "--rm", "--name", name, "--network", network, *mounts, *options,
                    "-v", f"{job}:/job", "-w", str(ROOT), *environment, image, "sh", "-c",
                    script.replace("pybuild ", f"{python} -m builder.cli "), check=False)
    return result.returncode, result.stderr.decode(errors="replace")


def _reachable_by_all(path: str) -> bool:
    """Whether every directory above `path` lets any user through (a pyenv under /root does
    not)."""
    parent = os.path.dirname(path)
    while parent != "/":
        if not os.stat(parent).st_mode & 0o001:
            return False
        parent = os.path.dirname(parent)
    return True


def job_dir(tmp_path: Path, base: Path, dockerfile: str) -> Path:
    job = tmp_path / "job"
    (job / "context").mkdir(parents=True)
    (job / "context" / "Dockerfile").write_text(dockerfile)
    (job / "context" / "f").write_text("from the context\n")
    shutil.copy(base, job / "base.tar")
    return job


LOAD = "pybuild load -i /job/base.tar && "


def test_in_an_unprivileged_container_auto_picks_chroot(tmp_path, base, reference, images,
                                                        runner):
    """The cache on a volume, as before snapshots could keep whiteouts as files."""
    job = job_dir(tmp_path, base, DOCKERFILE)
    status, log = in_container(runner, images, job, LOAD + "pybuild --isolation auto "
                               "--iidfile /job/iid -o /job/image.tar /job/context",
                               cache="/job/cache")
    assert status == 0, log
    assert "sandbox: chroot (namespaces: unshare: Operation not permitted (EPERM)" in log
    assert (job / "iid").read_text() == reference["full"]


@pytest.fixture(scope="module")
def deletions(tmp_path_factory, base) -> str:
    """The image ID of DELETIONS built under namespaces on the host."""
    work = tmp_path_factory.mktemp("deletions")
    (work / "context").mkdir()
    (work / "context" / "f").write_text("from the context\n")
    return build(work, base, DELETIONS, "--isolation", "namespaces")[0]


def test_cache_on_the_containers_overlayfs_root(tmp_path, base, deletions, images, runner):
    """`docker run -v $PWD:/job` and nothing else: the cache lands on the container's
    overlayfs root, which holds no 0/0 devices; deletions, opaque directories, a multi-stage
    COPY --from give the namespaces image byte for byte, and a cache exported to the job's
    workspace makes the next job's build all cached, with the same image."""
    job = job_dir(tmp_path, base, DELETIONS)
    status, log = in_container(runner, images, job, LOAD + "pybuild --progress plain "
                               "--iidfile /job/iid -o /job/image.tar "
                               "--cache-to type=local,dest=/job/buildcache /job/context && "
                               "ls /root/.cache/pybuild/snapshots")
    assert status == 0, log
    assert "sandbox: chroot (" in log
    assert (job / "iid").read_text() == deletions
    status, log = in_container(runner, images, job, LOAD + "pybuild --progress plain "
                               "--iidfile /job/iid2 -o /job/image2.tar "
                               "--cache-from type=local,src=/job/buildcache /job/context")
    assert status == 0, log
    assert ": 0 steps run, 10 cached" in log
    assert (job / "iid2").read_text() == deletions


def test_push_to_a_registry(tmp_path, base, deletions, images, runner,
                            registry: Registry):  # noqa: F811
    """`--push` from the job container, the cache on its overlayfs root: the registry gets the
    namespaces image. The registry is a process of the host on 127.0.0.1, which a container
    reaches only in the host's network namespace: `--network host` here, and pybuild in the
    container talks to nothing but that 127.0.0.1 address, so no traffic leaves the loopback."""
    require(shutil.which("skopeo") is not None, "skopeo")
    job = job_dir(tmp_path, base, DELETIONS)
    target = f"{registry.address}/ci-{uuid.uuid4().hex[:8]}:1"
    status, log = in_container(runner, images, job, LOAD + "pybuild --push --provenance=false "
                               f"-t {target} /job/context", network="host")
    assert status == 0, log
    assert "sandbox: chroot (" in log and f"pushing {target}" in log
    seen = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                           f"docker://{target}"], capture_output=True, timeout=60)
    assert seen.returncode == 0, seen.stderr.decode()
    assert json.loads(seen.stdout)["config"]["digest"] == deletions


def test_read_only_root_and_a_tmpfs_workspace(tmp_path, base, deletions, images, runner):
    job = job_dir(tmp_path, base, DELETIONS)
    status, log = in_container(runner, images, job, "cp -r /job/context /job/base.tar /ws && "
                               "pybuild load -i /ws/base.tar && pybuild --iidfile /ws/iid "
                               "-o /ws/image.tar /ws/context && cp /ws/iid /job/iid",
                               "--read-only", "--tmpfs", "/ws:rw,exec,dev,size=256m", "-e", "TMPDIR=/ws",
                               cache="/ws/cache")
    assert status == 0, log
    assert (job / "iid").read_text() == deletions


def test_as_a_user_other_than_root(tmp_path, base, images, runner):
    """`docker run --user 1000`: a build without RUN works; one with RUN says what is missing
    and the ways out."""
    job = job_dir(tmp_path, base, NO_RUN)
    os.chmod(job, 0o777)
    env = "PYBUILD_CACHE_DIR=/tmp/cache "
    status, log = in_container(runner, images, job, env + LOAD.replace("pybuild", env + "pybuild")
                               + env + "pybuild -o /job/image.tar /job/context", user="1000")
    assert status == 0, log
    (job / "context" / "Dockerfile").write_text(DOCKERFILE)
    status, log = in_container(runner, images, job, env + "pybuild load -i /job/base.tar && "
                               + env + "pybuild -o /job/image.tar /job/context", user="1000")
    assert status == 1, log
    assert "RUN needs CAP_SYS_CHROOT (chroot) or user namespaces (rootless)" in log
    assert "--user 0" in log and "seccomp=unconfined" in log
    assert "Traceback" not in log


def _container_cases() -> list:
    """The busybox corpus of tests/test_conformance.py but the cases served on the host's
    127.0.0.1 (ADD of a URL), which a job container on Docker's default network cannot reach."""
    names = set(case_names())
    return [case for case in load_cases(CASES) if case.name in names and not case.serve]


@pytest.fixture
def job_container(tmp_path, base, images, runner) -> str:
    """One long-lived job container (Docker's defaults: default seccomp profile and
    capabilities, no network, the cache on its overlayfs root) with the base image loaded into
    pybuild's store, as a CI job would hold it for many builds; `tmp_path` is its workspace."""
    image, mounts = runner
    shutil.copy(base, tmp_path / "base.tar")
    name = f"pybuild-isolation-{uuid.uuid4().hex[:10]}"
    images.containers.append(name)
    docker("run", "-d", "--name", name, "--network", "none", *mounts,
           "-v", f"{tmp_path}:{tmp_path}", "-w", str(ROOT), *JOB_ENVIRONMENT, image,
           "sleep", "86400")
    python = os.path.realpath(sys.executable)
    loaded = docker("exec", name, python, "-m", "builder.cli", "load", "-q", "-i",
                    str(tmp_path / "base.tar"), check=False)
    assert loaded.returncode == 0, loaded.stderr.decode()
    return name


def test_conformance_cases_in_a_container(tmp_path, base, images, job_container):
    """The busybox corpus, every case built by `docker exec` in one job container under
    `chroot`, the cache shared between cases as a CI runner's is, loaded into Docker and
    compared with Docker's own build of the case (the harness's cached reference); the cases
    where chroot differs from Docker differ here too, and nowhere else."""
    docker("load", "-i", str(base))
    images.names.append(BASE_IMAGE)
    candidate = (f"docker exec {job_container} {os.path.realpath(sys.executable)} -m builder.cli "
                 "--isolation chroot -f {dockerfile} -t {tag} -o {out} {buildargs} {secrets} "
                 "{target} {context}")
    cases = _container_cases()
    run = run_corpus(cases, Options(candidate=candidate, probe_base=BASE_IMAGE,
                                    strict_lines=True, cwd=str(ROOT), work_root=tmp_path / "stage",
                                    expected=DIFFERS["chroot"]))
    report.write(run, candidate, tmp_path / "report.json")
    wrong = {result.case.name: problem for result in run.results
             if (problem := wrong_verdict(result, "chroot"))}
    assert not wrong, wrong
