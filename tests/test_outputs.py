"""`-o/--output` in buildx's syntax: the parsing of each form, the usage errors, and end to end the
outputs other tools read: a `FROM scratch` stage of artifacts exported with type=local (the
"build a binary in Docker" job), an OCI layout that skopeo reads and Docker then runs, a root
filesystem tar that holds what `docker export` of the same Dockerfile built by `docker build`
holds, the docker tarball unchanged, and pushes with type=registry."""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
import uuid
from pathlib import Path

import pytest

from builder import cli
from builder.output.localdir import write_local
from builder.output.spec import OutputSpec, is_spec, parse_output
from layers.compression import Compression
from layers.errors import LayerError
from tests.registry_support import Registry, registry  # noqa: F401  (a fixture)
from tests.support import DockerImages, busybox_base, docker, pybuild, require
from tests.test_unpack import as_nobody, tar_of

REG, DIR, SYM, CHR = tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.CHRTYPE

# (the -o value, the spec it gives)
SPECS = [
    ("type=docker,dest=a.tar", OutputSpec("docker", "a.tar")),
    ("type=docker", OutputSpec("docker")),
    ("type=oci,dest=-", OutputSpec("oci", "-")),
    ("type=oci", OutputSpec("oci", "-")),
    ("type=tar,dest=root.tar", OutputSpec("tar", "root.tar")),
    ("type=local,dest=out", OutputSpec("local", "out")),
    ("TYPE=local, dest = out", OutputSpec("local", "out")),
    ("type=registry", OutputSpec("image", push=True)),
    ('type=registry,"name=r.example/a:1,r.example/a:2"',
     OutputSpec("image", names=("r.example/a:1", "r.example/a:2"), push=True)),
    ("type=image,name=r.example/a:1,push=true",
     OutputSpec("image", names=("r.example/a:1",), push=True)),
    ("type=image,name=a:1", OutputSpec("image", names=("a:1",))),
    ("type=image,push=false", OutputSpec("image")),
    ("type=oci,dest=a.tar,compression=zstd,oci-mediatypes=true",
     OutputSpec("oci", "a.tar", compression=Compression.ZSTD, oci_mediatypes=True)),
    ("type=docker,dest=a.tar,compression=uncompressed,oci-mediatypes=false",
     OutputSpec("docker", "a.tar", compression=Compression.NONE, oci_mediatypes=False)),
    ("type=registry,compression=gzip,force-compression=true,rewrite-timestamp=true",
     OutputSpec("image", push=True, compression=Compression.GZIP, rewrite_timestamp=True)),
    ("type=docker,dest=a.tar,name=x:1", OutputSpec("docker", "a.tar", names=("x:1",))),
]

# (the -o value, what its error says)
BAD_SPECS = [
    ("dest=out", "type= is required"),
    ("type=zip,dest=a", "unknown output type 'zip'"),
    ("type=local", "type=local needs dest=DIRECTORY"),
    ("type=local,dest=-", "type=local needs dest=DIRECTORY"),
    ("type=tar,dest=a,compression=gzip", "type=tar does not take compression"),
    ("type=local,dest=a,name=x", "type=local does not take name"),
    ("type=docker,dest=a,tar=false", "type=docker does not take tar"),
    ("type=registry,push-by-digest=true", "does not take push-by-digest"),
    ("type=oci,dest=a,compression=estargz", "compression=estargz is not one of"),
    ("type=image,push=maybe", "push=maybe is not true or false"),
    ("type=oci,dest=a,compression=zstd,oci-mediatypes=false", "zstd layers need"),
    ("type=local,dest=a,dest=b", "dest= given twice"),
    ("type=local,out", "'out' is not KEY=VALUE"),
]


@pytest.mark.parametrize("value,expected", SPECS, ids=[value for value, _ in SPECS])
def test_output_specs_parse_as_buildx_reads_them(value, expected):
    assert is_spec(value)
    parsed = parse_output(value)
    assert parsed == OutputSpec(**{**expected.__dict__, "text": value})


@pytest.mark.parametrize("value,message", BAD_SPECS, ids=[value for value, _ in BAD_SPECS])
def test_bad_output_specs_say_what_is_wrong(value, message):
    with pytest.raises(ValueError, match=message):
        parse_output(value)


@pytest.mark.parametrize("value", ["image.tar", "-", "out/dir=1/x.tar", "/tmp/a.tar"])
def test_a_bare_path_stays_the_image_tarball(value):
    assert not is_spec(value)


# (the options, what the usage error says)
USAGE = [
    (["-o", "type=zip"], "unknown output type"),
    (["-o", "a.tar", "-o", "b.tar"], "only one image tarball path"),
    (["-o", "type=registry"], "--push needs at least one -t"),
    (["-o", "type=tar,dest=-", "-o", "type=oci,dest=-"], "only one output can go to stdout"),
    (["-o", "type=image,name=Bad:Name,push=true"], "invalid reference"),
    (["-o", "type=oci,dest=missing/a.tar"], "its directory does not exist"),
    (["-o", "type=local,dest=Dockerfile"], "is not a directory"),
    (["-o", "type=local,dest=/"], "refusing to write an image's files over /"),
    (["-t", "a:1", "-o", "type=registry,compression=zstd,oci-mediatypes=false"],
     "zstd layers need"),
]


@pytest.mark.parametrize("options,message", USAGE, ids=[" ".join(o) for o, _ in USAGE])
def test_bad_outputs_are_usage_errors_before_any_work(tmp_path, monkeypatch, capsys, options,
                                                      message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    status = cli.main([*options, "--cache-dir", str(tmp_path / "cache"), "."])
    assert status == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()


# -- end to end ----------------------------------------------------------------------------------

ARTIFACTS = """\
FROM busybox:test AS build
RUN mkdir -p /out && printf 'built\\n' > /out/app && chmod 755 /out/app
FROM scratch
COPY --from=build /out/app /
"""


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A cache with busybox:test loaded."""
    top = tmp_path_factory.mktemp("outputs")
    archive = busybox_base(top)
    env = {"PYBUILD_CACHE_DIR": str(top / "cache")}
    assert pybuild("load", "-q", "-i", str(archive), env=env).returncode == 0
    return top, env, archive


def _context(tmp_path: Path, dockerfile: str) -> Path:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(dockerfile)
    return context


def test_a_scratch_stage_of_artifacts_exports_to_a_directory_and_more(base, tmp_path,
                                                                       images: DockerImages):
    _, env, _ = base
    other = images.name("pybuild-docker-types")
    context = _context(tmp_path, ARTIFACTS)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "kept").write_text("not the image's")
    result = pybuild("--network", "none", "-t", "app:1", "-o", "type=local,dest=out",
                     "-o", "type=tar,dest=root.tar", "-o", "type=docker,dest=docker.tar",
                     "-o", "bare.tar", "-o", f"type=docker,dest=named.tar,name={other},"
                     "oci-mediatypes=false", str(context), cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    assert sorted(os.listdir(out)) == ["app", "kept"]
    assert (out / "app").read_text() == "built\n"
    assert stat.S_IMODE(os.stat(out / "app").st_mode) == 0o755
    assert (os.stat(out / "app").st_uid, os.stat(out / "app").st_gid) == (0, 0)
    with tarfile.open(tmp_path / "root.tar") as tar:
        assert [(i.name, i.mode, tar.extractfile(i).read()) for i in tar] == [
            ("app", 0o755, b"built\n")]
    assert (tmp_path / "docker.tar").read_bytes() == (tmp_path / "bare.tar").read_bytes()
    with tarfile.open(tmp_path / "named.tar") as tar:
        [item] = json.load(tar.extractfile("manifest.json"))
        [descriptor] = json.load(tar.extractfile("index.json"))["manifests"]
        manifest = json.load(tar.extractfile("blobs/sha256/" + descriptor["digest"][7:]))
    assert item["RepoTags"] == [other]
    assert f"Loaded image: {other}" in images.load(tmp_path / "named.tar")
    assert descriptor["mediaType"] == manifest["mediaType"] == \
        "application/vnd.docker.distribution.manifest.v2+json"
    assert manifest["config"]["mediaType"] == "application/vnd.docker.container.image.v1+json"
    assert [layer["mediaType"] for layer in manifest["layers"]] == [
        "application/vnd.docker.image.rootfs.diff.tar"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bare.tar", "ctx", "docker.tar",
                                                         "named.tar", "out", "root.tar"]


def test_an_oci_layout_is_what_skopeo_reads_and_docker_runs(base, tmp_path,
                                                              images: DockerImages):
    _, env, _ = base
    require(shutil.which("skopeo") is not None, "skopeo")
    context = _context(tmp_path, 'FROM busybox:test\nCMD ["echo", "from an OCI layout"]\n')
    result = pybuild("-t", "oci-app:1", "-o", "type=oci,dest=app.tar,compression=gzip",
                     str(context), cwd=tmp_path, env=env | {"BUILDX_NO_DEFAULT_ATTESTATIONS": "1"})
    assert result.returncode == 0, result.stderr
    with tarfile.open(tmp_path / "app.tar") as tar:
        names = tar.getnames()
        index = json.load(tar.extractfile("index.json"))
    assert "manifest.json" not in names and "oci-layout" in names
    [descriptor] = index["manifests"]
    annotations = descriptor["annotations"]
    assert annotations["io.containerd.image.name"] == "docker.io/library/oci-app:1"
    assert annotations["org.opencontainers.image.ref.name"] == "1"
    assert annotations["org.opencontainers.image.created"].endswith("Z")
    inspected = json.loads(subprocess.run(
        ["skopeo", "inspect", f"oci-archive:{tmp_path / 'app.tar'}"], capture_output=True,
        check=True).stdout)
    assert inspected["Digest"] == descriptor["digest"]
    manifest = json.loads(subprocess.run(
        ["skopeo", "inspect", "--raw", f"oci-archive:{tmp_path / 'app.tar'}"],
        capture_output=True, check=True).stdout)
    assert [layer["mediaType"] for layer in manifest["layers"]] == [
        "application/vnd.oci.image.layer.v1.tar+gzip"]
    name = images.name("pybuild-oci")
    subprocess.run(["skopeo", "copy", f"oci-archive:{tmp_path / 'app.tar'}",
                    f"docker-archive:{tmp_path / 'docker.tar'}:{name}"], capture_output=True,
                   check=True)
    images.load(tmp_path / "docker.tar")
    run = images.run(name)
    assert (run.returncode, run.stdout) == (0, b"from an OCI layout\n")


ROOTFS = """\
FROM busybox:test
RUN mkdir -p /data/sub /data/gone && echo a > /data/a && echo b > /data/sub/b \\
 && echo g > /data/gone/g && ln /data/a /data/hard && ln -s a /data/link \\
 && chown 1000:2000 /data/a && chmod 4750 /data/a && mkfifo /data/fifo && chmod 1777 /data/sub
RUN rm -rf /data/gone /data/sub/b && echo c > /data/c && chown -h 7:8 /data/link
RUN rm -rf /data/sub && mkdir /data/sub && echo n > /data/sub/n
"""
# What Docker puts in every container, not in the image.
_CONTAINER_ONLY = {".dockerenv", "dev", "proc", "sys", "etc/hostname", "etc/hosts",
                   "etc/resolv.conf", "etc/mtab"}


def _listing(path: Path) -> dict[str, tuple]:
    """name -> (kind, mode, uid, gid, symlink target); hardlinks as the files they are."""
    found = {}
    with tarfile.open(path) as tar:
        for info in tar:
            name = info.name.removeprefix("./").strip("/")
            if not name or name in _CONTAINER_ONLY or name.partition("/")[0] in _CONTAINER_ONLY:
                continue
            kind = REG if info.islnk() else info.type
            mode = 0o777 if info.issym() else info.mode & 0o7777  # docker export may add S_IFMT
            found[name] = (kind, oct(mode), info.uid, info.gid,
                           info.linkname if info.issym() else "")
    return found


def test_a_root_filesystem_tar_holds_what_docker_export_holds(base, tmp_path,
                                                              images: DockerImages):
    top, env, archive = base
    context = _context(tmp_path, ROOTFS)
    result = pybuild("--network", "none", "-o", "type=tar,dest=root.tar", str(context),
                     cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    tag = images.name("pybuild-busybox")
    subprocess.run([*map(str, ("python3", Path(__file__).parent.parent /
                               "testdata/images/busybox/make.py", tmp_path / "b.tar", "--tag",
                               tag))], check=True)
    docker("load", "-i", str(tmp_path / "b.tar"))
    built = images.name("pybuild-export")
    (context / "Dockerfile").write_text(ROOTFS.replace("busybox:test", tag))
    docker("build", "--network", "none", "-t", built, str(context))
    container = docker("create", built, "true").stdout.decode().strip()
    images.containers.append(container)
    docker("export", "-o", str(tmp_path / "export.tar"), container)
    ours, theirs = _listing(tmp_path / "root.tar"), _listing(tmp_path / "export.tar")
    assert ours == theirs
    assert ours["data/a"] == (REG, oct(0o4750), 1000, 2000, "")
    assert ours["data/link"] == (SYM, oct(0o777), 7, 8, "a")
    assert "data/gone" not in ours and "data/sub/n" in ours and "data/sub/b" not in ours


def test_outputs_stream_to_stdout(base, tmp_path):
    _, env, _ = base
    context = _context(tmp_path, ARTIFACTS)
    result = pybuild("-o", "type=tar", str(context), cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    (tmp_path / "stdout.tar").write_bytes(result.stdout)
    with tarfile.open(tmp_path / "stdout.tar") as tar:
        assert tar.getnames() == ["app"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ctx", "stdout.tar"]


def test_source_date_epoch_is_every_mtime_of_a_directory_output(base, tmp_path):
    _, env, _ = base
    context = _context(tmp_path, ARTIFACTS)
    result = pybuild("-o", "type=local,dest=out",
                     "-o", "type=oci,dest=o.tar,rewrite-timestamp=true", str(context),
                     cwd=tmp_path, env={**env, "SOURCE_DATE_EPOCH": "1000000000"})
    assert result.returncode == 0, result.stderr
    assert os.stat(tmp_path / "out/app").st_mtime == os.stat(tmp_path / "out").st_mtime == 1e9
    with tarfile.open(tmp_path / "o.tar") as tar:
        created = json.load(tar.extractfile("index.json"))["manifests"][0]["annotations"]
    assert created == {"org.opencontainers.image.created": "2001-09-09T01:46:40Z"}
    result = pybuild("-o", "type=docker,dest=d.tar,rewrite-timestamp=true", str(context),
                     cwd=tmp_path, env=env)
    assert result.returncode == 0 and "rewrite-timestamp=true does nothing without " \
        "SOURCE_DATE_EPOCH" in result.stderr, result.stderr


def test_type_registry_pushes_the_names_it_is_given(base, tmp_path, registry):  # noqa: F811
    _, env, _ = base
    require(shutil.which("skopeo") is not None, "skopeo")
    context = _context(tmp_path, 'FROM busybox:test\nCMD ["true"]\n')
    name = f"{registry.address}/pushed-{uuid.uuid4().hex[:8]}"
    result = pybuild("-o", f"type=registry,name={name}:1,oci-mediatypes=true",
                     "-o", f"type=image,name={name}:2,push=true", "--provenance=false",
                     "--insecure-registry", registry.address, str(context), cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "image.tar").exists()
    for tag in ("1", "2"):
        raw = json.loads(subprocess.run(
            ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{name}:{tag}"],
            capture_output=True, check=True).stdout)
        assert raw["mediaType"] == "application/vnd.oci.image.manifest.v1+json"


# -- type=local's defences -----------------------------------------------------------------------

def _layers(tmp_path: Path, *layers) -> list[str]:
    paths = []
    for number, layer in enumerate(layers):
        path = tmp_path / f"layer{number}.tar"
        path.write_bytes(layer.getvalue())
        paths.append(str(path))
    return paths


def test_a_hostile_image_cannot_write_outside_the_directory(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / "planted").symlink_to(victim / "keep")  # what was there before: replaced, not followed
    layers = _layers(tmp_path, tar_of(("escape", SYM, str(victim)), ("up", SYM, "../../../.."),
                                      ("planted", REG, b"image")),
                     tar_of(("escape/pwned", REG, b"in"), ("up/pwned", REG, b"up"),
                            ("escape/keep", REG, b"overwritten?")))
    write_local(str(out), layers)
    assert sorted(os.listdir(victim)) == ["keep"] and (victim / "keep").read_text() == "precious"
    assert (out / str(victim).lstrip("/") / "pwned").read_text() == "in"
    assert (out / str(victim).lstrip("/") / "keep").read_text() == "overwritten?"
    assert (out / "pwned").read_text() == "up"
    assert not (out / "planted").is_symlink() and (out / "planted").read_text() == "image"
    assert os.readlink(out / "escape") == str(victim)  # kept as the image has it, never followed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["layer0.tar", "layer1.tar", "out",
                                                         "victim"]


def test_a_failed_export_leaves_the_directory_as_it_was(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old").write_text("old")
    truncated = tar_of(("big", REG, b"x" * 4096)).getvalue()[:1024]
    layers = _layers(tmp_path, tar_of(("new", REG, b"new")))
    (tmp_path / "bad.tar").write_bytes(truncated)
    with pytest.raises(LayerError):
        write_local(str(out), layers + [str(tmp_path / "bad.tar")])
    assert os.listdir(out) == ["old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tar", "layer0.tar", "out"]


def _unprivileged_export(out: Path, layers: list[str]) -> None:
    warnings = write_local(str(out), layers)
    assert os.stat(out / "f").st_uid == os.getuid() == 65534
    assert not (out / "null").exists() and stat.S_ISFIFO(os.lstat(out / "fifo").st_mode)
    assert warnings == ["null: device node skipped (needs root)"]


@pytest.mark.skipif(os.geteuid() != 0, reason="switches to nobody")
def test_as_a_user_files_are_the_users_and_device_nodes_are_skipped():
    place = Path(tempfile.mkdtemp(prefix="local-nobody-"))  # pytest's tmp_path is root's only
    try:
        os.chmod(place, 0o777)
        layers = _layers(place, tar_of(("f", REG, b"f", {"uid": 0}), ("fifo", tarfile.FIFOTYPE),
                                       ("null", CHR, {"devmajor": 1, "devminor": 3})))
        for layer in layers:
            os.chmod(layer, 0o644)
        as_nobody(_unprivileged_export, place / "out", layers)
    finally:
        shutil.rmtree(place)


def test_as_root_device_nodes_and_owners_are_kept(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    layers = _layers(tmp_path, tar_of(("f", REG, b"f", {"uid": 5, "gid": 6}),
                                      ("null", CHR, {"devmajor": 1, "devminor": 3})))
    assert write_local(str(tmp_path / "out"), layers) == []
    assert (os.stat(tmp_path / "out/f").st_uid, os.stat(tmp_path / "out/f").st_gid) == (5, 6)
    assert os.stat(tmp_path / "out/null").st_rdev == os.makedev(1, 3)


def test_through_the_api_an_export_takes_the_builds_tags_and_compression(tmp_path):
    from builder.api import BuildRequest, build
    context = _context(tmp_path, "FROM scratch\nCOPY f /f\n")
    (context / "f").write_text("f")
    request = BuildRequest(context=str(context), tags=("api:1",), output=None,
                           compression=Compression.GZIP, cache_dir=str(tmp_path / "cache"),
                           exports=(parse_output(f"type=oci,dest={tmp_path / 'a.tar'}"),))
    result = build(request)
    with tarfile.open(tmp_path / "a.tar") as tar:
        [descriptor] = json.load(tar.extractfile("index.json"))["manifests"]
        manifest = json.load(tar.extractfile("blobs/sha256/" + descriptor["digest"][7:]))
    assert descriptor["annotations"]["io.containerd.image.name"] == "docker.io/library/api:1"
    assert [layer["mediaType"] for layer in manifest["layers"]] == [
        "application/vnd.oci.image.layer.v1.tar+gzip"]
    assert result.manifest_digest == descriptor["digest"]
