"""The remaining `docker buildx build` flags: --add-host, --ulimit, --shm-size and --cgroup-parent
as RUN sees them under each strategy (real builds on the busybox test image, /etc/hosts compared
with Docker's), --annotation read back from the tarball and the registry, --builder and
--driver, and what each option refuses."""
from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import pytest

from builder.output.annotations import parse_annotations
from builder.runoptions import Ulimit, parse_cgroup_parent, parse_host, parse_shm_size, parse_ulimit
from builder.sandbox import cgroups
from layers.image import Annotations
from layers.platform import Platform
from tests.registry_support import registry  # noqa: F401  (a fixture)
from tests.rootless_user import rootless_user
from tests.support import (ROOT, DockerImages, busybox_base, docker, docker_available, image_file,
                           pybuild, require)

HOSTS = ("--add-host", "foo:1.2.3.4", "--add-host", "bar.example:fe80:0::1",
         "--add-host", "foo:5.6.7.8", "--add-host", "v6:::1")
SHOW = "FROM busybox:test\nRUN cat /etc/hosts > /hosts && ulimit -Sn > /nofile && " \
       "ulimit -Hn >> /nofile && grep ' /dev/shm ' /proc/mounts > /shm && " \
       "cat /proc/self/cgroup > /cgroup\n"
HOST = Platform("linux", "amd64")


# -- what the options accept ----------------------------------------------------------------------

@pytest.mark.parametrize("text, entry", [
    ("foo:1.2.3.4", ("foo", "1.2.3.4")), ("bar.example:fe80:0::1", ("bar.example", "fe80::1")),
    ("x=1.2.3.4", ("x", "1.2.3.4")), ("x:[::1]", ("x", "::1")),
    ("x:::ffff:1.2.3.4", ("x", "1.2.3.4")), ("UPPER-case_1:10.0.0.1", ("UPPER-case_1", "10.0.0.1")),
])
def test_add_host_values(text, entry):
    assert parse_host(text) == entry


@pytest.mark.parametrize("text, message", [
    (":1.2.3.4", "not NAME:IP"), ("foo", "not NAME:IP"), ("x:1.2.3", "invalid IP address"),
    ("x:010.1.1.1", "invalid IP address"), ("x:", "invalid IP address"),
    ("a b:1.2.3.4", "not a host name"), ("a\n9.9.9.9 evil:1.2.3.4", "not a host name"),
    ("a#b:1.2.3.4", "not a host name"), ("x:host-gateway", "pybuild has no bridge"),
    ("x:fe80::1%eth0", "with a zone"),
])
def test_add_host_refusals(text, message):
    with pytest.raises(ValueError, match=f"(?s)^--add-host .*{message}"):
        parse_host(text)


@pytest.mark.parametrize("text, limit", [
    ("nofile=100:200", Ulimit("nofile", 100, 200)), ("nofile=100", Ulimit("nofile", 100, 100)),
    ("nproc=-1", Ulimit("nproc", -1, -1)), ("core=0:-1", Ulimit("core", 0, -1)),
    ("locks=5", Ulimit("locks", 5, 5)), ("stack=8192:8192", Ulimit("stack", 8192, 8192)),
])
def test_ulimit_values(text, limit):
    assert parse_ulimit(text) == limit


@pytest.mark.parametrize("text, message", [
    ("nofile=10:5", "soft limit must be at most the hard"), ("nofile=-1:5", "soft limit"),
    ("bogus=1", "invalid ulimit type 'bogus'"), ("NOFILE=1", "invalid ulimit type"),
    ("nofile", "not TYPE=SOFT"), ("nofile=abc", "'abc' is not a limit"),
    ("nofile=-2", "not a limit"), ("nofile=1:", "not a limit"), ("nofile=", "not a limit"),
    ("nofile=99999999999999999999", "not a limit"),
])
def test_ulimit_refusals(text, message):
    with pytest.raises(ValueError, match=f"^--ulimit {re.escape(text)}: .*{message}"):
        parse_ulimit(text)


@pytest.mark.parametrize("text, size", [("128m", 128 << 20), ("1g", 1 << 30), ("4096", 4096)])
def test_shm_sizes(text, size):
    assert parse_shm_size(text) == size


@pytest.mark.parametrize("text", ["0", "-1m", "x", ""])
def test_bad_shm_sizes(text):
    with pytest.raises(ValueError, match="^--shm-size .*greater than 0"):
        parse_shm_size(text)


@pytest.mark.parametrize("text, path", [("/ci/job", "/ci/job"), ("ci", "ci"), ("ci/job/", "ci/job"),
                                        ("/a.b/c-d", "/a.b/c-d")])
def test_cgroup_parents(text, path):
    assert parse_cgroup_parent(text) == path


@pytest.mark.parametrize("text", ["..", "../..", "/../../etc", "a/../../b", ".", "/", "", "a//b",
                                  "a\nb", "a/./b"])
def test_hostile_cgroup_parents_are_refused(text):
    with pytest.raises(ValueError, match="(?s)^--cgroup-parent .*not a cgroup path"):
        parse_cgroup_parent(text)


@pytest.mark.parametrize("values, expected", [
    (["a=1"], Annotations(manifest=(("a", "1"),))),
    (["manifest:a=1", "a=2"], Annotations(manifest=(("a", "2"),))),
    (["index:b=x=y"], Annotations(index=(("b", "x=y"),))),
    (["index,manifest:c=3"], Annotations(manifest=(("c", "3"),), index=(("c", "3"),))),
    (["manifest-descriptor:d="], Annotations(descriptor=(("d", ""),))),
    (["manifest[linux/amd64]:e=5"], Annotations(manifest=(("e", "5"),))),
    (["org.opencontainers.image.source=https://example.com/x"],
     Annotations(manifest=(("org.opencontainers.image.source", "https://example.com/x"),))),
])
def test_annotations(values, expected):
    assert parse_annotations(values, HOST) == expected


@pytest.mark.parametrize("text, message", [
    ("a", "not \\[TYPE:\\]KEY=VALUE"), ("=1", "not \\[TYPE:\\]KEY=VALUE"),
    ("index:=1", "not"), ("bogus:a=1", "the type must be"),
    ("index-descriptor:a=1", "no index of indexes"), ("manifest[linux/arm64]:a=1", "only for"),
])
def test_annotation_refusals(text, message):
    with pytest.raises(ValueError, match=f"^--annotation .*{message}"):
        parse_annotations([text], HOST)


@pytest.mark.parametrize("target, text, accepted", [
    (Platform("linux", "arm64"), "manifest[linux/arm64]:a=1", True),
    (Platform("linux", "arm64"), "manifest[linux/amd64]:a=1", False),
    (None, "manifest[linux/amd64]:a=1", False),
    (None, "manifest:a=1", True),
])
def test_annotation_platforms_follow_the_target(target, text, accepted):
    """A platform-qualified annotation names the one platform built; several take none."""
    if accepted:
        assert parse_annotations([text], target).manifest == (("a", "1"),)
    else:
        with pytest.raises(ValueError, match="only for|multi-platform"):
            parse_annotations([text], target)


@pytest.mark.parametrize("options, message", [
    (("--cgroup-parent", "../.."), "--cgroup-parent ../..: not a cgroup path"),
    (("--add-host", "x:host-gateway"), "host-gateway names Docker's bridge gateway"),
    (("--ulimit", "nofile=10:5"), "the soft limit must be at most the hard limit"),
    (("--shm-size", "0"), "--shm-size 0: not a size greater than 0"),
    (("--annotation", "a=1", "-o", "type=oci,dest=x.tar,oci-mediatypes=false"),
     "manifest annotations need an OCI manifest"),
    (("--driver", "docker-container"), "pybuild is daemonless"),
])
def test_usage_errors(tmp_path, options, message):
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    result = pybuild(*options, str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert os.listdir(tmp_path) == ["Dockerfile"]


# -- RUN under the strategies ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return busybox_base(tmp_path_factory.mktemp("base"))


def build(work: Path, base: Path, dockerfile: str, *options: str):
    """Build with a cache of its own, reproducibly; the finished process and the tarball."""
    context = work / "context"
    context.mkdir(parents=True, exist_ok=True)
    (context / "Dockerfile").write_text(dockerfile)
    env = {"PYBUILD_CACHE_DIR": str(work / "cache"), "SOURCE_DATE_EPOCH": "1700000000"}
    assert pybuild("load", "-i", str(base), env=env).returncode == 0
    out = work / "image.tar"
    return pybuild("--progress", "plain", "-o", str(out), *options, str(context), env=env), out


def shown(tarball: Path, name: str) -> str:
    return image_file(tarball, name).decode()


@pytest.fixture
def cgroup_parent():
    """A parent name of the test's own, removed from every hierarchy afterwards."""
    name = f"pybuild-test-{uuid.uuid4().hex[:8]}"
    yield name
    for hierarchy in {h.mount: h for h in cgroups.hierarchies().values()}.values():
        for base in (hierarchy.mount, hierarchy.own):
            path = os.path.join(base, name)
            if os.path.isdir(path):
                os.rmdir(path)


def test_etc_hosts_is_dockers(tmp_path, base):
    """The same lines, in the same order, as Docker 20.10's BuildKit writes."""
    result, out = build(tmp_path, base, "FROM busybox:test\nRUN cat /etc/hosts > /hosts\n", *HOSTS)
    assert result.returncode == 0, result.stderr
    ours = shown(out, "hosts")
    assert ours.endswith("1.2.3.4\tfoo\nfe80::1\tbar.example\n5.6.7.8\tfoo\n::1\tv6\n")
    require(docker_available(), "docker")
    images = DockerImages()
    try:
        tag = images.name("pybuild-busybox")
        subprocess.run([sys.executable, str(ROOT / "testdata/images/busybox/make.py"),
                        str(tmp_path / "d.tar"), "--tag", tag], check=True)
        docker("load", "-i", str(tmp_path / "d.tar"))
        context = tmp_path / "docker-context"
        context.mkdir()
        (context / "Dockerfile").write_text(f"FROM {tag}\nRUN cat /etc/hosts > /hosts\n")
        docker("build", "--network", "none", *HOSTS, "-o",
               f"type=local,dest={tmp_path / 'docker-out'}", str(context))
    finally:
        images.cleanup()
    assert ours == (tmp_path / "docker-out" / "hosts").read_text()


def test_ulimit_shm_size_and_cgroup_parent_under_namespaces(tmp_path, base, cgroup_parent):
    require("pids" in cgroups.hierarchies(), "the pids cgroup controller")
    result, out = build(tmp_path, base, SHOW, "--isolation", "namespaces", "--ulimit",
                        "nofile=100:200", "--ulimit", "core=0", "--shm-size", "128m",
                        "--cgroup-parent", cgroup_parent)
    assert result.returncode == 0, result.stderr
    assert shown(out, "nofile") == "100\n200\n"
    assert "size=131072k" in shown(out, "shm")
    groups = [line for line in shown(out, "cgroup").splitlines() if ":pids:" in line]
    assert re.search(f"/{cgroup_parent}/run-\\d+-[0-9a-f]+$", groups[0]), groups
    parent = os.path.join(cgroups.hierarchies()["pids"].own, cgroup_parent)
    assert not [name for name in os.listdir(parent) if name.startswith("run-")]


@pytest.mark.parametrize("limits", [(), ("--pids-limit", "-1")])
def test_absolute_cgroup_parent_is_under_the_root(tmp_path, base, cgroup_parent, limits):
    """Also without any limit: the RUN still gets a group under the parent."""
    pids = cgroups.hierarchies().get("pids")
    require(pids is not None, "the pids cgroup controller")
    result, out = build(tmp_path, base, SHOW, "--cgroup-parent", f"/{cgroup_parent}/job",
                        *limits)
    assert result.returncode == 0, result.stderr
    line = [line for line in shown(out, "cgroup").splitlines() if ":pids:" in line][0]
    assert line.split(":", 2)[2].startswith(f"/{cgroup_parent}/job/run-")
    os.rmdir(os.path.join(pids.mount, cgroup_parent, "job"))


def test_defaults_are_dockers(tmp_path, base):
    """No options: Docker's 64 MiB /dev/shm, and pybuild's own open-file limits."""
    result, out = build(tmp_path, base, SHOW)
    assert result.returncode == 0, result.stderr
    assert "size=65536k" in shown(out, "shm")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert shown(out, "nofile") == f"{soft}\n{hard}\n"


def test_the_options_are_in_the_cache_key(tmp_path, base):
    dockerfile = "FROM busybox:test\nRUN cat /etc/hosts > /hosts\n"
    for options, ran in ((("--add-host", "a:1.1.1.1"), "1 steps run"),
                         (("--add-host", "a:1.1.1.1"), "0 steps run"),
                         (("--add-host", "a:2.2.2.2"), "1 steps run"),
                         (("--add-host", "a:2.2.2.2", "--ulimit", "nofile=64"), "1 steps run")):
        result, _ = build(tmp_path, base, dockerfile, *options)
        assert result.returncode == 0 and ran in result.stderr, result.stderr


def test_a_limit_the_kernel_refuses_fails_clearly(tmp_path, base):
    result, _ = build(tmp_path, base, SHOW, "--ulimit", "nofile=4000000000")
    assert result.returncode == 1
    assert "--ulimit nofile=4000000000:4000000000: cannot set it: not allowed to raise maximum " \
        "limit" in result.stderr


def test_chroot_honours_hosts_and_ulimit_and_refuses_shm_size(tmp_path, base):
    result, out = build(tmp_path / "a", base, SHOW.replace(" && grep ' /dev/shm ' /proc/mounts "
                                                           "> /shm && cat /proc/self/cgroup > "
                                                           "/cgroup", ""),
                        "--isolation", "chroot", "--ulimit", "nofile=100:200", *HOSTS)
    assert result.returncode == 0, result.stderr
    assert shown(out, "nofile") == "100\n200\n"
    assert shown(out, "hosts").endswith("5.6.7.8\tfoo\n::1\tv6\n")
    result, _ = build(tmp_path / "b", base, SHOW, "--isolation", "chroot", "--shm-size", "128m")
    assert result.returncode == 1
    assert "--shm-size sizes the tmpfs mounted at /dev/shm, which the chroot sandbox cannot " \
        "mount" in result.stderr


def test_rootless_honours_hosts_ulimit_and_shm_size(base):
    with rootless_user(base) as user:
        user.grant(ranges=True)
        result, _ = user.build(SHOW, options=("--ulimit", "nofile=100:200", "--shm-size", "32m",
                                              *HOSTS))
        assert result.returncode == 0, result.stderr
        assert shown(user.output, "nofile") == "100\n200\n"
        assert "size=32768k" in shown(user.output, "shm")
        assert shown(user.output, "hosts").endswith("5.6.7.8\tfoo\n::1\tv6\n")
        # raising a hard limit takes CAP_SYS_RESOURCE of the host's user namespace
        result, _ = user.build(SHOW, options=("--ulimit", "nofile=100:-1"))
        assert result.returncode == 1
        assert "--ulimit nofile=100:-1: cannot set it: not allowed to raise maximum limit" \
            in result.stderr


# -- annotations, --builder -----------------------------------------------------------------------

ANNOTATIONS = ("--annotation", "org.opencontainers.image.source=https://example.com/app",
               "--annotation", "index:ci.job=42", "--annotation", "manifest-descriptor:d=x")


def test_annotations_in_the_tarball(tmp_path, base):
    require(shutil.which("skopeo") is not None, "skopeo")
    result, out = build(tmp_path, base, "FROM busybox:test\n", *ANNOTATIONS, "--provenance=false",
                        "-o", f"type=oci,dest={tmp_path / 'oci.tar'}")
    assert result.returncode == 0, result.stderr
    for archive in (out, tmp_path / "oci.tar"):
        manifest = json.loads(subprocess.run(["skopeo", "inspect", "--raw",
                                              f"oci-archive:{archive}"], check=True,
                                             capture_output=True).stdout)
        assert manifest["annotations"] == {
            "org.opencontainers.image.source": "https://example.com/app"}
        with tarfile.open(archive) as tar:
            index = json.load(tar.extractfile("index.json"))
        assert index["annotations"] == {"ci.job": "42"}
        assert index["manifests"][0]["annotations"]["d"] == "x"


def test_annotations_on_push(tmp_path, base, registry):  # noqa: F811
    require(shutil.which("skopeo") is not None, "skopeo")
    target = f"{registry.address}/annotated-{uuid.uuid4().hex[:8]}:1"
    result, _ = build(tmp_path, base, "FROM busybox:test\n", *ANNOTATIONS, "--push", "-t", target,
                      "--provenance=false")
    assert result.returncode == 0, result.stderr
    assert "index and manifest-descriptor annotations are not pushed" in result.stderr
    manifest = json.loads(subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                                          f"docker://{target}"], check=True,
                                         capture_output=True).stdout)
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["annotations"] == {"org.opencontainers.image.source": "https://example.com/app"}


@pytest.mark.parametrize("progress", ["plain", "json", "quiet"])
def test_builder_is_ignored_with_a_warning_in_the_log(tmp_path, base, progress):
    result, out = build(tmp_path, base, "FROM busybox:test\n", "--builder", "mybuilder",
                        "--progress", progress)
    assert result.returncode == 0, result.stderr
    warning = "--builder mybuilder is ignored: pybuild is daemonless"
    if progress == "json":
        events = [json.loads(line) for line in result.stderr.splitlines()]
        assert any(warning in json.dumps(event) for event in events), result.stderr
    else:
        assert warning in result.stderr
    assert out.exists()


def test_a_changed_index_annotation_rewrites_the_unchanged_tarball(tmp_path, base):
    """The tarball is not rewritten for an unchanged image, but annotations outside the manifest
    make it another file."""
    ids: list[str] = []
    for value in ("1", "2"):
        result, out = build(tmp_path, base, "FROM busybox:test\n", "--annotation",
                            f"index:ci.job={value}")
        assert result.returncode == 0, result.stderr
        with tarfile.open(out) as tar:
            assert json.load(tar.extractfile("index.json"))["annotations"] == {"ci.job": value}
        ids.append(result.stderr.split("built ")[1].split()[0])
    assert ids[0] == ids[1]  # the same image: only the annotation tells the tarballs apart
