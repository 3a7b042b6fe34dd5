"""--platform for a foreign architecture: RUN through the kernel's binfmt_misc handler
(qemu-user-static), the automatic platform ARGs as BuildKit sets them, the config's
architecture, FROM --platform=$BUILDPLATFORM, and the error where no handler is registered.

The arm64 base is busybox:test made by testdata/images/busybox/make.py from Debian's arm64
busybox-static, which .ci/setup unpacks into ARM64_BUSYBOX."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import pytest

from builder.binfmt import BINFMT_DIR, NoHandler, require_runnable
from layers.platform import Platform, build_args, host_platform, parse_platform
from tests.registry_support import Registry, free_port, registry  # noqa: F401  (a fixture)
from tests.rootless_user import rootless_user
from tests.support import (ROOT, busybox_base, build_over, docker, image_file, pybuild,
                           require)

ARM64_BUSYBOX = "/var/cache/pybuild-testdata/busybox-arm64/bin/busybox"
ARM64 = Platform("linux", "arm64")


@pytest.mark.parametrize("text, wanted", [
    ("linux/arm64", Platform("linux", "arm64")),
    ("linux/arm64/v8", Platform("linux", "arm64")),
    ("linux/aarch64", Platform("linux", "arm64")),
    ("linux/arm", Platform("linux", "arm", "v7")),
    ("linux/arm/v6", Platform("linux", "arm", "v6")),
    ("Linux/x86_64", Platform("linux", "amd64")),
])
def test_platforms_are_normalised_as_containerd_does(text: str, wanted: Platform) -> None:
    assert parse_platform(text) == wanted


@pytest.mark.parametrize("text", ["linux", "arm64", "linux//v7", "linux/arm64/v8/x"])
def test_a_malformed_platform_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a platform"):
        parse_platform(text)


def test_platform_args_name_the_target_and_the_host_apart() -> None:
    values = build_args(parse_platform("linux/arm/v7"), Platform("linux", "amd64"))
    assert values == {"TARGETPLATFORM": "linux/arm/v7", "TARGETOS": "linux", "TARGETARCH": "arm",
                      "TARGETVARIANT": "v7", "BUILDPLATFORM": "linux/amd64", "BUILDOS": "linux",
                      "BUILDARCH": "amd64", "BUILDVARIANT": ""}


def _config(tarball: Path) -> dict:
    with tarfile.open(tarball) as archive:
        manifest = json.load(archive.extractfile("manifest.json"))[0]
        return json.load(archive.extractfile(manifest["Config"]))


def _arm64_base(directory: Path) -> Path:
    busybox_base(directory)  # the namespaces sandbox, or a skip saying why not
    require(os.path.exists(ARM64_BUSYBOX), f"Debian's arm64 busybox-static at {ARM64_BUSYBOX} "
            "(.ci/setup unpacks it)")
    try:
        require_runnable(ARM64)
        runnable = True
    except NoHandler:
        runnable = False
    require(runnable, "a binfmt_misc handler for arm64 (qemu-user-static, see .ci/setup)")
    archive = directory / "busybox-arm64.tar"
    subprocess.run([sys.executable, str(ROOT / "testdata/images/busybox/make.py"), str(archive),
                    "--tag", "busybox:test", "--busybox", ARM64_BUSYBOX], check=True)
    return archive


@pytest.mark.parametrize("isolation", ["namespaces", "chroot"])
def test_a_foreign_run_goes_through_binfmt(tmp_path: Path, isolation: str) -> None:
    base = _arm64_base(tmp_path)
    out, _ = build_over(tmp_path, base, (
        "FROM busybox:test\nARG TARGETPLATFORM\nARG TARGETARCH\nARG BUILDPLATFORM\n"
        'RUN uname -m > /arch && echo "$TARGETPLATFORM $TARGETARCH $BUILDPLATFORM" > /args\n'),
        "--platform", "linux/arm64", "--isolation", isolation)
    assert image_file(out, "arch") == b"aarch64\n"
    host = str(host_platform())
    assert image_file(out, "args").decode() == f"linux/arm64 arm64 {host}\n"
    assert _config(out)["architecture"] == "arm64"


_ARGS_DOCKERFILE = (
    "FROM busybox:test\nARG TARGETPLATFORM\nARG TARGETOS\nARG TARGETARCH\nARG TARGETVARIANT\n"
    "ARG BUILDPLATFORM\nARG BUILDARCH\nRUN uname -m > /arch && echo \"$TARGETPLATFORM $TARGETOS "
    "$TARGETARCH [$TARGETVARIANT] $BUILDPLATFORM $BUILDARCH\" > /args\n")


def test_a_foreign_build_agrees_with_docker(tmp_path: Path, images) -> None:
    """Docker 20.10's BuildKit with the same binfmt handler is the oracle for what a RUN sees."""
    base = _arm64_base(tmp_path)
    out, _ = build_over(tmp_path, base, _ARGS_DOCKERFILE, "--platform", "linux/arm64")
    name = images.name("pybuild-platform-base")
    docker_base = tmp_path / "docker-base.tar"
    subprocess.run([sys.executable, str(ROOT / "testdata/images/busybox/make.py"),
                    str(docker_base), "--tag", name, "--busybox", ARM64_BUSYBOX], check=True)
    images.load(docker_base)
    (tmp_path / "docker-context").mkdir()
    (tmp_path / "docker-context" / "Dockerfile").write_text(
        _ARGS_DOCKERFILE.replace("busybox:test", name))
    docker("build", "--network", "none", "--platform", "linux/arm64",
           "-o", f"type=local,dest={tmp_path / 'docker-out'}", str(tmp_path / "docker-context"))
    for path in ("arch", "args"):
        assert image_file(out, path) == (tmp_path / "docker-out" / path).read_bytes()


def test_a_foreign_run_works_rootless(tmp_path: Path) -> None:
    """The handler's F flag opened qemu at registration: a user namespace needs nothing more."""
    base = _arm64_base(tmp_path)
    with rootless_user(base) as user:
        user.grant(ranges=True)
        result, _ = user.build("FROM busybox:test\nRUN uname -m > /arch\n",
                               options=("--platform", "linux/arm64", "--isolation", "rootless"))
        assert result.returncode == 0, result.stderr
        assert image_file(user.output, "arch") == b"aarch64\n"


def test_a_local_image_of_another_platform_is_not_used(tmp_path: Path) -> None:
    """FROM resolves a name for the target platform: the store's arm64 image does not serve an
    amd64 build, and the error says what the store has."""
    require(os.path.exists(ARM64_BUSYBOX), f"Debian's arm64 busybox-static at {ARM64_BUSYBOX}")
    name = f"127.0.0.1:{free_port()}/pybuild-platform:1"
    base = tmp_path / "base.tar"
    subprocess.run([sys.executable, str(ROOT / "testdata/images/busybox/make.py"), str(base),
                    "--tag", name, "--busybox", ARM64_BUSYBOX], check=True)
    env = {"PYBUILD_CACHE_DIR": str(tmp_path / "cache")}
    assert pybuild("load", "-i", str(base), env=env).returncode == 0
    (tmp_path / "context").mkdir()
    (tmp_path / "context" / "Dockerfile").write_text(f"FROM {name}\n")
    result = pybuild("--platform", "linux/amd64", "-o", str(tmp_path / "image.tar"),
                     str(tmp_path / "context"), env=env)
    assert result.returncode != 0
    assert f"cannot pull {name} for linux/amd64" in result.stderr, result.stderr
    assert "has it only for linux/arm64" in result.stderr


def test_from_buildplatform_runs_on_the_host(tmp_path: Path) -> None:
    """The cross-compiling pattern: a stage FROM --platform=$BUILDPLATFORM runs natively and
    the target stage copies its output."""
    base = _arm64_base(tmp_path)
    (tmp_path / "host").mkdir()
    host_base = busybox_base(tmp_path / "host")
    subprocess.run([sys.executable, str(ROOT / "testdata/images/busybox/make.py"),
                    str(host_base), "--tag", "busybox:host"], check=True)
    env = {"PYBUILD_CACHE_DIR": str(tmp_path / "cache")}
    assert pybuild("load", "-i", str(host_base), env=env).returncode == 0
    out, _ = build_over(tmp_path, base, (
        "FROM --platform=$BUILDPLATFORM busybox:host AS tool\nRUN uname -m > /built-on\n"
        "FROM busybox:test\nCOPY --from=tool /built-on /\nRUN uname -m > /runs-on\n"),
        "--platform", "linux/arm64")
    assert image_file(out, "built-on") == os.uname().machine.encode() + b"\n"
    assert image_file(out, "runs-on") == b"aarch64\n"
    assert _config(out)["architecture"] == "arm64"


def test_scratch_takes_the_target_platform(tmp_path: Path) -> None:
    (tmp_path / "context").mkdir()
    (tmp_path / "context" / "Dockerfile").write_text("FROM scratch\nCOPY Dockerfile /\n")
    out = tmp_path / "image.tar"
    result = pybuild("--platform", "linux/arm/v7", "-o", str(out), str(tmp_path / "context"),
                     env={"PYBUILD_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr
    config = _config(out)
    assert (config["architecture"], config.get("variant")) == ("arm", "v7")


def test_a_malformed_from_platform_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\nFROM --platform=arm64 scratch\n")
    result = pybuild("-o", str(tmp_path / "image.tar"), str(tmp_path),
                     env={"PYBUILD_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode != 0
    assert "Dockerfile:2: FROM --platform: 'arm64' is not a platform" in result.stderr, \
        result.stderr


@pytest.fixture
def s390x_unregistered():
    """Takes away the s390x handler for the test (the kernel's table is global: put back after),
    so the build meets a foreign platform nothing here can run."""
    entry = Path(BINFMT_DIR) / "qemu-s390x"
    enabled = entry.exists() and entry.read_text().startswith("enabled")
    if enabled:
        entry.write_text("0")
    require_runnable.cache_clear()
    try:
        yield
    finally:
        if enabled:
            entry.write_text("1")
        require_runnable.cache_clear()


def test_no_handler_fails_before_the_run_naming_the_package(tmp_path: Path,
                                                            s390x_unregistered) -> None:
    (tmp_path / "context").mkdir()
    (tmp_path / "context" / "Dockerfile").write_text("FROM scratch\nRUN true\n")
    result = pybuild("--platform", "linux/s390x", "-o", str(tmp_path / "image.tar"),
                     str(tmp_path / "context"), env={"PYBUILD_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode != 0
    assert "Dockerfile:2: RUN: cannot run binaries of linux/s390x" in result.stderr, result.stderr
    assert "qemu-user-static" in result.stderr
    assert not (tmp_path / "image.tar").exists()


def _blob(archive: tarfile.TarFile, digest: str) -> bytes:
    return archive.extractfile("blobs/sha256/" + digest.partition(":")[2]).read()


def _platform_images(tarball: Path) -> dict[str, tuple[dict, bytes]]:
    """Per platform named in the archive's image index: the config, and the top layer's
    /arch."""
    with tarfile.open(tarball) as archive:
        index = json.loads(archive.extractfile("index.json").read())
        (top,) = index["manifests"]
        images = {}
        for entry in json.loads(_blob(archive, top["digest"]))["manifests"]:
            manifest = json.loads(_blob(archive, entry["digest"]))
            config = json.loads(_blob(archive, manifest["config"]["digest"]))
            layer = tarfile.open(fileobj=io.BytesIO(_blob(archive,
                                                          manifest["layers"][-1]["digest"])))
            images["/".join(entry["platform"].values())] = (
                config, layer.extractfile("arch").read())
        return images


def test_several_platforms_make_an_image_index(tmp_path: Path) -> None:
    arm64 = _arm64_base(tmp_path)
    (tmp_path / "host").mkdir()
    host = busybox_base(tmp_path / "host")
    subprocess.run([sys.executable, str(ROOT / "testdata/images/busybox/make.py"), str(host),
                    "--tag", "busybox:amd64"], check=True)
    subprocess.run([sys.executable, str(ROOT / "testdata/images/busybox/make.py"), str(arm64),
                    "--tag", "busybox:arm64", "--busybox", ARM64_BUSYBOX], check=True)
    env = {"PYBUILD_CACHE_DIR": str(tmp_path / "cache")}
    assert pybuild("load", "-i", str(host), env=env).returncode == 0
    out, _ = build_over(tmp_path, arm64, "ARG TARGETARCH\nFROM busybox:$TARGETARCH\n"
                        "RUN uname -m > /arch\n", "--platform", "linux/amd64,linux/arm64",
                        "-t", "multi:1", "--iidfile", str(tmp_path / "iid"))
    images = _platform_images(out)
    assert {platform: (config["architecture"], arch)
            for platform, (config, arch) in images.items()} == {
        "amd64/linux": ("amd64", b"x86_64\n"), "arm64/linux": ("arm64", b"aarch64\n")}
    raw = subprocess.run(["skopeo", "inspect", "--raw", f"oci-archive:{out}"],
                         capture_output=True, check=True).stdout
    assert [m["platform"]["architecture"] for m in json.loads(raw)["manifests"]] == \
        ["amd64", "arm64"]
    with tarfile.open(out) as archive:
        loaded = json.load(archive.extractfile("manifest.json"))
        (top,) = json.load(archive.extractfile("index.json"))["manifests"]
    assert (tmp_path / "iid").read_text() == top["digest"]
    assert [entry["RepoTags"] for entry in loaded] == [["multi:1"], []]


def test_docker_loads_every_platform_and_tags_the_hosts(tmp_path: Path, images) -> None:
    """Docker 20.10 reads manifest.json: it loads both images, and the tag names the host's."""
    require(host_platform().architecture == "amd64", "an amd64 host")
    (tmp_path / "context").mkdir()
    (tmp_path / "context" / "Dockerfile").write_text("FROM scratch\nCOPY Dockerfile /\n")
    name = images.name("pybuild-platforms")
    out = tmp_path / "image.tar"
    result = pybuild("--platform", "linux/arm64,linux/amd64", "-t", name, "-o", str(out),
                     str(tmp_path / "context"), env={"PYBUILD_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr
    with tarfile.open(out) as archive:
        configs = [entry["Config"].rpartition("/")[2]
                   for entry in json.load(archive.extractfile("manifest.json"))]
    images.names.extend(f"sha256:{config}" for config in configs)
    images.load(out)
    assert [images.inspect(f"sha256:{config}")["Architecture"] for config in configs] == \
        ["arm64", "amd64"]
    assert images.inspect(name)["Id"] == f"sha256:{configs[1]}"


def test_each_platform_keeps_its_attestation(tmp_path: Path) -> None:
    """As BuildKit writes it: the index lists each platform's manifest and, after it, the
    attestation manifest that refers to it."""
    (tmp_path / "context").mkdir()
    (tmp_path / "context" / "Dockerfile").write_text("FROM scratch\nCOPY Dockerfile /\n")
    out = tmp_path / "image.tar"
    result = pybuild("--platform", "linux/amd64,linux/arm64", "--provenance", "mode=min",
                     "-o", str(out), str(tmp_path / "context"),
                     env={"PYBUILD_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr
    raw = json.loads(subprocess.run(["skopeo", "inspect", "--raw", f"oci-archive:{out}"],
                                    capture_output=True, check=True).stdout)
    manifests = raw["manifests"]
    assert [m["platform"]["architecture"] for m in manifests] == \
        ["amd64", "unknown", "arm64", "unknown"]
    for image, attestation in (manifests[0:2], manifests[2:4]):
        assert attestation["annotations"]["vnd.docker.reference.digest"] == image["digest"]


def test_several_platforms_push_an_index(tmp_path: Path, registry: Registry) -> None:
    """The pushed tag names an image index of both platforms, each manifest pullable by
    digest; a build FROM it for arm64 gets the arm64 image."""
    (tmp_path / "context").mkdir()
    (tmp_path / "context" / "Dockerfile").write_text("FROM scratch\nCOPY Dockerfile /\n")
    ref = f"{registry.address}/multi-{uuid.uuid4().hex[:8]}:1"
    env = {"PYBUILD_CACHE_DIR": str(tmp_path / "cache")}
    result = pybuild("--platform", "linux/amd64,linux/arm64", "--push", "-t", ref,
                     str(tmp_path / "context"), env=env)
    assert result.returncode == 0, result.stderr
    raw = json.loads(subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw",
                                     f"docker://{ref}"], capture_output=True, check=True).stdout)
    assert raw["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert [m["platform"]["architecture"] for m in raw["manifests"]] == ["amd64", "arm64"]
    (tmp_path / "from").mkdir()
    (tmp_path / "from" / "Dockerfile").write_text(f"FROM {ref}\nCOPY Dockerfile /again\n")
    out = tmp_path / "from.tar"
    result = pybuild("--platform", "linux/arm64", "-o", str(out), str(tmp_path / "from"),
                     env={"PYBUILD_CACHE_DIR": str(tmp_path / "cache2")})
    assert result.returncode == 0, result.stderr
    assert _config(out)["architecture"] == "arm64"


@pytest.mark.parametrize("options, message", [
    (("--platform", "arm64"), "not a platform"),
    (("--platform", "linux/amd64,linux/arm64", "--load"), "image index"),
    (("--platform", "linux/amd64,linux/arm64", "-o", "-"), "image index"),
    (("--platform", "linux/amd64,linux/arm64", "-o", "type=local,dest=out"), "image index"),
])
def test_platform_option_errors(tmp_path: Path, options: tuple[str, ...], message: str) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    result = pybuild(*options, str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Dockerfile"]
