"""The SBOM (`--sbom`, `pybuild sbom`): each package database read from layer tars as syft reads
it, the flags, and end to end on the Debian base image: the packages and versions `dpkg-query`
reports inside it, a pip-installed wheel, the attestation manifest as skopeo and a registry see
it, and the tarball `docker load` of Docker 20.10 still loads and runs."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sqlite3
import struct
import subprocess
import tarfile
import tempfile
import uuid
from functools import partial
from pathlib import Path

import pytest

from builder.supplychain.options import Attestations, no_default_attestations, parse_attestations
from builder.supplychain.packages import image_packages
from builder.supplychain.spdx import spdx_document
from tests.registry_support import Registry, registry  # noqa: F401  (a fixture)
from tests.support import DockerImages, ROOT, docker, pybuild, require
from tests.test_unpack import tar_of

REG, DIR, SYM = tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE

DEBIAN_OS = b'PRETTY_NAME="Debian GNU/Linux 12"\nID=debian\nVERSION_ID="12"\n'
DPKG_STATUS = b"""Package: bash
Status: install ok installed
Architecture: amd64
Version: 5.2.15-2+b2
Description: GNU Bourne Again SHell
 Bash is an sh-compatible command language interpreter.

Package: removed
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0

Package: libc6
Status: install ok installed
Architecture: amd64
Version: 2.36-9+deb12u4
"""
COPYRIGHT = b"Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n" \
            b"Files: *\nLicense: GPL-3+\n\nFiles: lib/*\nLicense: GPL-2+\n"
APK = b"C:Q1abc=\nP:musl\nV:1.2.4-r2\nA:x86_64\nL:MIT\n\nC:Q1def=\nP:busybox\nV:1.36.1-r5\n" \
      b"A:x86_64\nL:GPL-2.0-only\n"
ALPINE_OS = b"ID=alpine\nVERSION_ID=3.19.1\n"
METADATA = b"Metadata-Version: 2.1\nName: Requests_Toolbelt\nVersion: 1.0.0\nLicense: Apache 2.0" \
           b"\n\nlong description\nLicense: not this\n"
PKG_INFO = b"Metadata-Version: 1.0\nName: oldegg\nVersion: 0.1\nLicense: UNKNOWN\n"
NPM = json.dumps({"name": "left-pad", "version": "1.3.0", "license": "WTFPL"}).encode()
NPM_SCOPED = json.dumps({"name": "@types/node", "version": "20.1.0",
                         "license": {"type": "MIT"}}).encode()



def rpm_header(tags: dict[int, str | int]) -> bytes:
    """An rpm header as the database stores it: strings (type 6) and int32s (type 4)."""
    entries, data = b"", b""
    for tag, value in tags.items():
        if isinstance(value, int):
            data += bytes(-len(data) % 4)
            entries += struct.pack(">iiii", tag, 4, len(data), 1)
            data += struct.pack(">i", value)
        else:
            entries += struct.pack(">iiii", tag, 6, len(data), 1)
            data += value.encode() + b"\0"
    return struct.pack(">ii", len(tags), len(data)) + entries + data


def rpmdb(*blobs: bytes) -> bytes:
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "rpmdb.sqlite")
        connection = sqlite3.connect(path)
        connection.execute("CREATE TABLE Packages (hnum INTEGER PRIMARY KEY, blob BLOB NOT NULL)")
        connection.executemany("INSERT INTO Packages (blob) VALUES (?)", [(b,) for b in blobs])
        connection.commit()
        connection.close()
        with open(path, "rb") as handle:
            return handle.read()


FEDORA_OS = b'ID=fedora\nVERSION_ID=39\n'
RPMDB = rpmdb(
    rpm_header({1000: "bash", 1001: "5.2.15", 1002: "5.fc39", 1014: "GPL-3.0-or-later",
                1022: "x86_64"}),
    rpm_header({1000: "shadow-utils", 1001: "4.14.0", 1002: "2.fc39", 1003: 2,
                1022: "x86_64"}),
    struct.pack(">ii", 1 << 30, 0) + b"hostile: more entries than bytes",
    b"\x00")

# (layers, the packages as (kind, name, version, license, purl))
CASES = {
    "dpkg, installed only, licenses from DEP-5 copyright": (
        [[("etc/os-release", REG, DEBIAN_OS), ("var/lib/dpkg/status", REG, DPKG_STATUS),
          ("usr/share/doc/bash/copyright", REG, COPYRIGHT)]],
        [("deb", "bash", "5.2.15-2+b2", "GPL-3+ AND GPL-2+",
          "pkg:deb/debian/bash@5.2.15-2+b2?arch=amd64&distro=debian-12"),
         ("deb", "libc6", "2.36-9+deb12u4", "",
          "pkg:deb/debian/libc6@2.36-9+deb12u4?arch=amd64&distro=debian-12")]),
    "distroless status.d, md5sums skipped": (
        [[("etc/os-release", REG, DEBIAN_OS),
          ("var/lib/dpkg/status.d/base", REG,
           b"Package: base-files\nArchitecture: amd64\nVersion: 12.4\n"),
          ("var/lib/dpkg/status.d/base.md5sums", REG, b"Package: nope\nVersion: 1\n")]],
        [("deb", "base-files", "12.4", "",
          "pkg:deb/debian/base-files@12.4?arch=amd64&distro=debian-12")]),
    "apk": (
        [[("etc/os-release", REG, ALPINE_OS), ("lib/apk/db/installed", REG, APK)]],
        [("apk", "busybox", "1.36.1-r5", "GPL-2.0-only",
          "pkg:apk/alpine/busybox@1.36.1-r5?arch=x86_64&distro=alpine-3.19.1"),
         ("apk", "musl", "1.2.4-r2", "MIT",
          "pkg:apk/alpine/musl@1.2.4-r2?arch=x86_64&distro=alpine-3.19.1")]),
    "rpm sqlite database, epoch as a qualifier, broken headers skipped": (
        [[("etc/os-release", REG, FEDORA_OS), ("var/lib/rpm/rpmdb.sqlite", REG, RPMDB)]],
        [("rpm", "bash", "5.2.15-5.fc39", "GPL-3.0-or-later",
          "pkg:rpm/fedora/bash@5.2.15-5.fc39?arch=x86_64&distro=fedora-39"),
         ("rpm", "shadow-utils", "4.14.0-2.fc39", "",
          "pkg:rpm/fedora/shadow-utils@4.14.0-2.fc39?arch=x86_64&epoch=2&distro=fedora-39")]),
    "an rpmdb.sqlite that is not sqlite gives nothing": (
        [[("var/lib/rpm/rpmdb.sqlite", REG, b"SQLite format 3\0" + bytes(200))]],
        []),
    "python dist-info and egg-info, names normalised in the purl": (
        [[("usr/lib/python3/dist-packages/requests_toolbelt-1.0.0.dist-info/METADATA", REG,
           METADATA),
          ("usr/local/lib/python3.11/site-packages/oldegg-0.1.egg-info/PKG-INFO", REG, PKG_INFO),
          ("srv/app/requirements.txt", REG, b"flask==3\n")]],
        [("python", "Requests_Toolbelt", "1.0.0", "Apache 2.0",
          "pkg:pypi/requests-toolbelt@1.0.0"),
         ("python", "oldegg", "0.1", "", "pkg:pypi/oldegg@0.1")]),
    "npm, scoped and nested, broken json ignored": (
        [[("app/node_modules/left-pad/package.json", REG, NPM),
          ("app/node_modules/@types/node/package.json", REG, NPM_SCOPED),
          ("app/node_modules/broken/package.json", REG, b"{nope"),
          ("app/node_modules/left-pad/node_modules/.bin/package.json", REG, NPM),
          ("app/package.json", REG, json.dumps({"name": "app", "version": "1"}).encode())]],
        [("npm", "@types/node", "20.1.0", "MIT", "pkg:npm/%40types/node@20.1.0"),
         ("npm", "left-pad", "1.3.0", "WTFPL", "pkg:npm/left-pad@1.3.0")]),
    "a package removed by a later layer is gone": (
        [[("usr/lib/python3/dist-packages/gone-1.dist-info/METADATA", REG,
           b"Name: gone\nVersion: 1\n")],
         [("usr/lib/python3/dist-packages/.wh.gone-1.dist-info", REG)]],
        []),
    "os-release as Debian links it": (
        [[("usr/lib/os-release", REG, DEBIAN_OS), ("etc", DIR),
          ("etc/os-release", SYM, "../usr/lib/os-release"),
          ("var/lib/dpkg/status", REG, b"Package: a\nVersion: 1\nArchitecture: all\n")]],
        [("deb", "a", "1", "", "pkg:deb/debian/a@1?arch=all&distro=debian-12")]),
    "binary garbage gives nothing, not a crash": (
        [[("var/lib/dpkg/status", REG, bytes(range(256)) * 8),
          ("lib/apk/db/installed", REG, b"\xff\xfe:\x00\n\n:::")]],
        []),
}


@pytest.mark.parametrize("layers, expected", CASES.values(), ids=CASES.keys())
def test_packages_are_read_from_the_layers(tmp_path, layers, expected):
    paths = []
    for number, members in enumerate(layers):
        path = tmp_path / f"layer{number}.tar"
        path.write_bytes(tar_of(*members).getvalue())
        paths.append(str(path))
    found = [(p.kind, p.name, p.version, p.license, p.purl) for p in image_packages(paths)]
    assert found == expected


def test_a_database_too_large_is_not_read(tmp_path, monkeypatch):
    """A hostile image's huge "database" is skipped, not read into memory."""
    from builder.supplychain import packages
    layer = tmp_path / "layer.tar"
    layer.write_bytes(tar_of(("var/lib/dpkg/status", REG, DPKG_STATUS)).getvalue())
    assert image_packages([str(layer)])
    monkeypatch.setattr(packages, "_DATABASE_LIMIT", 100)
    assert image_packages([str(layer)]) == ()


def test_the_document_is_spdx_and_deterministic(tmp_path):
    layer = tmp_path / "layer.tar"
    layer.write_bytes(tar_of(("etc/os-release", REG, DEBIAN_OS),
                             ("var/lib/dpkg/status", REG, DPKG_STATUS)).getvalue())
    packages = image_packages([str(layer)])
    document = spdx_document("docker.io/library/app:1", packages, "2024-01-01T00:00:00Z")
    assert document == spdx_document("docker.io/library/app:1", packages, "2024-01-01T00:00:00Z")
    assert document["spdxVersion"] == "SPDX-2.3" and document["dataLicense"] == "CC0-1.0"
    ids = [p["SPDXID"] for p in document["packages"]]
    assert len(set(ids)) == 2 and all(i.startswith("SPDXRef-") for i in ids)
    assert {r["relatedSpdxElement"] for r in document["relationships"]} == set(ids)
    assert document["creationInfo"]["created"] == "2024-01-01T00:00:00Z"


DEFAULT = Attestations(provenance="min", default_provenance=True)
FLAGS = [
    ((None, None, []), DEFAULT),
    ((None, None, [], True), Attestations()),  # BUILDX_NO_DEFAULT_ATTESTATIONS
    (("true", None, []), dataclasses.replace(DEFAULT, sbom=True)),
    (("true", None, [], True), Attestations(sbom=True)),
    (("false", None, ["type=sbom"]), DEFAULT),
    ((None, "mode=max", []), Attestations(provenance="max")),
    ((None, "true", []), Attestations(provenance="min")),
    ((None, "false", []), Attestations()),
    ((None, None, ["type=provenance,disabled=true"]), Attestations()),
    ((None, None, ["type=provenance,mode=max,version=v1", "type=sbom"]),
     Attestations(True, "max", "v1")),
    ((None, "false", ["type=provenance"]), Attestations()),
    ((None, "builder-id=https://ci.example/run/7", []),
     Attestations(provenance="min", builder_id="https://ci.example/run/7")),
]
NO_DEFAULT = [({}, False), ({"BUILDX_NO_DEFAULT_ATTESTATIONS": "1"}, True),
              ({"BUILDX_NO_DEFAULT_ATTESTATIONS": "true"}, True),
              ({"BUILDX_NO_DEFAULT_ATTESTATIONS": "0"}, False),
              ({"BUILDX_NO_DEFAULT_ATTESTATIONS": ""}, False)]
BAD_FLAGS = [
    ((None, None, ["type=vex"]), "must be sbom or provenance"),
    ((None, "mode=full", []), "^--provenance=mode=full: mode=full is not min or max"),
    ((None, None, ["type=sbom,generator=docker/scout-sbom-indexer"]), "generator="),
    ((None, None, ["type=provenance,color=red"]), "unknown key color"),
    (("maybe", None, []), "^--sbom=maybe: 'maybe' is not KEY=VALUE"),
    ((None, None, ["type=sbom,disabled=perhaps"]), "^--attest type=sbom,disabled=perhaps: "),
]


@pytest.mark.parametrize("arguments, expected", FLAGS)
def test_the_flags_give_the_attestations(arguments, expected):
    assert parse_attestations(*arguments) == expected


@pytest.mark.parametrize("environ, expected", NO_DEFAULT)
def test_buildx_no_default_attestations_is_read_as_buildx_reads_it(environ, expected):
    assert no_default_attestations(environ) is expected


@pytest.mark.parametrize("arguments, message", BAD_FLAGS)
def test_bad_flags_are_usage_errors(arguments, message):
    with pytest.raises(ValueError, match=message):
        parse_attestations(*arguments)


def test_a_bad_flag_is_a_usage_error_on_the_command_line(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    result = pybuild("--attest", "type=vex", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2 and "type= must be sbom or provenance" in result.stderr
    assert not (tmp_path / "image.tar").exists()


WHEEL_SETUP = ROOT / "testdata" / "conformance" / "193-debian-pip-install-wheel" / "setup.sh"
DOCKERFILE = """FROM debian:test
COPY greet-1.0-py3-none-any.whl /tmp/
RUN pip install --no-index --no-cache-dir --break-system-packages /tmp/greet-1.0-py3-none-any.whl \\
 && rm /tmp/greet-1.0-py3-none-any.whl
"""


@pytest.fixture(scope="module")
def sbom_build(debian_archive, tmp_path_factory):
    """The Debian base with a wheel pip-installed, built with --sbom=true into a tarball."""
    work = tmp_path_factory.mktemp("sbom")
    context = work / "context"
    context.mkdir()
    subprocess.run(["sh", str(WHEEL_SETUP)], cwd=context, check=True)
    (context / "Dockerfile").write_text(DOCKERFILE)
    env = {"PYBUILD_CACHE_DIR": str(work / "cache")}
    assert pybuild("load", "-i", str(debian_archive), env=env).returncode == 0
    name = f"pybuild-sbom-{uuid.uuid4().hex[:10]}:latest"
    out = work / "image.tar"
    result = pybuild("--network", "none", "--sbom=true", "-t", name, "-o", str(out),
                     str(context), env=env)
    assert result.returncode == 0, result.stderr
    return work, context, env, name, out


def _blob(archive: Path, digest: str) -> dict:
    with tarfile.open(archive) as tar:
        return json.load(tar.extractfile("blobs/sha256/" + digest.partition(":")[2]))


def _attestation(archive: Path) -> tuple[dict, dict, dict]:
    """The image index index.json names, the attestation manifest, and its first statement."""
    with tarfile.open(archive) as tar:
        top = json.load(tar.extractfile("index.json"))
    (entry,) = top["manifests"]
    assert entry["mediaType"] == "application/vnd.oci.image.index.v1+json"
    index = _blob(archive, entry["digest"])
    manifest = _blob(archive, index["manifests"][1]["digest"])
    return index, manifest, _blob(archive, manifest["layers"][0]["digest"])


def test_the_tarball_carries_the_attestation_as_buildkit_stores_it(sbom_build):
    _, _, _, _, out = sbom_build
    index, manifest, statement = _attestation(out)
    image, attestation = index["manifests"]
    assert len(manifest["layers"]) == 1
    assert image["platform"] == {"architecture": "amd64", "os": "linux"}
    assert attestation["platform"] == {"architecture": "unknown", "os": "unknown"}
    assert attestation["annotations"] == {"vnd.docker.reference.digest": image["digest"],
                                          "vnd.docker.reference.type": "attestation-manifest"}
    with tarfile.open(out) as tar:
        (saved,) = json.load(tar.extractfile("manifest.json"))
    assert _blob(out, image["digest"])["config"]["digest"] == \
        "sha256:" + saved["Config"].rpartition("/")[2]
    assert manifest["layers"][0]["mediaType"] == "application/vnd.in-toto+json"
    assert manifest["layers"][0]["annotations"] == {
        "in-toto.io/predicate-type": "https://spdx.dev/Document"}
    assert statement["_type"] == "https://in-toto.io/Statement/v0.1"
    assert statement["predicateType"] == "https://spdx.dev/Document"
    assert statement["subject"][0]["digest"] == {"sha256": image["digest"].partition(":")[2]}


def test_the_sbom_has_what_dpkg_and_pip_report_inside_the_image(sbom_build):
    require(subprocess.run(["docker", "info"], capture_output=True).returncode == 0, "docker")
    _, _, env, name, out = sbom_build
    _, _, statement = _attestation(out)
    packages = {(p["name"], p["externalRefs"][0]["referenceLocator"].split(":")[1].split("/")[0]):
                p for p in statement["predicate"]["packages"]}
    images = DockerImages()
    images.names.append(name)
    try:
        assert "Loaded image" in images.load(out)  # Docker 20.10's docker load, index and all
        ran = images.run(name, "dpkg-query", "-W", "-f", "${Package} ${Version}\\n",
                         "bash", "coreutils", "libc6")
        assert ran.returncode == 0, ran.stderr
        for line in ran.stdout.decode().splitlines():
            package, version = line.split()
            found = packages[(package, "deb")]
            assert found["versionInfo"] == version
            assert found["externalRefs"][0]["referenceLocator"] == \
                f"pkg:deb/debian/{package}@{version}?arch=amd64&distro=debian-12"
        assert images.run(name, "greet", "sbom").stdout == b"hello, sbom\n"
    finally:
        images.cleanup()
    assert packages[("greet", "pypi")]["versionInfo"] == "1.0"
    printed = pybuild("sbom", name, env=env)
    assert printed.returncode == 0, printed.stderr
    assert json.loads(printed.stdout)["packages"] == statement["predicate"]["packages"]


def test_skopeo_and_pybuild_load_read_the_archives_and_their_attestation(sbom_build):
    require(subprocess.run(["which", "skopeo"], capture_output=True).returncode == 0, "skopeo")
    work, context, env, name, out = sbom_build
    oci = work / "oci.tar"
    result = pybuild("--network", "none", "--sbom=true", "-t", name,
                     "-o", f"type=oci,dest={oci}", str(context), env=env)
    assert result.returncode == 0, result.stderr
    for archive in (out, oci):
        raw = json.loads(subprocess.run(["skopeo", "inspect", "--raw", f"oci-archive:{archive}"],
                                        capture_output=True, check=True).stdout)
        assert [m.get("annotations", {}).get("vnd.docker.reference.type")
                for m in raw["manifests"]] == [None, "attestation-manifest"]
        inspected = json.loads(subprocess.run(["skopeo", "inspect", f"oci-archive:{archive}"],
                                              capture_output=True, check=True).stdout)
        assert inspected["Os"] == "linux" and len(inspected["Layers"]) == 3  # base, COPY, RUN
        loaded = pybuild("load", "-i", str(archive), env={"PYBUILD_CACHE_DIR": str(work / "l")})
        assert loaded.returncode == 0 and name.partition(":")[0] in loaded.stdout.decode(), \
            loaded.stderr


def test_the_push_keeps_the_attestation(sbom_build, registry):  # noqa: F811
    require(subprocess.run(["which", "skopeo"], capture_output=True).returncode == 0, "skopeo")
    _, context, env, _, _ = sbom_build
    ref = f"{registry.address}/sbom-{uuid.uuid4().hex[:8]}:1"
    result = pybuild("--network", "none", "--sbom=true", "-t", ref, "--push",
                     "--insecure-registry", registry.address, str(context), env=env)
    assert result.returncode == 0, result.stderr
    raw = json.loads(subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw",
                                     f"docker://{ref}"], capture_output=True, check=True).stdout)
    image, attestation = raw["manifests"]
    assert attestation["annotations"]["vnd.docker.reference.digest"] == image["digest"]
    base = ref.rpartition(":")[0]
    manifest = json.loads(subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", "--raw",
         f"docker://{base}@{attestation['digest']}"], capture_output=True, check=True).stdout)
    layer = manifest["layers"][0]
    blob = subprocess.run(["curl", "-sf", f"http://{registry.address}/v2/"
                           f"{base.partition('/')[2]}/blobs/{layer['digest']}"],
                          capture_output=True, check=True).stdout
    statement = json.loads(blob)
    assert any(p["name"] == "greet" for p in statement["predicate"]["packages"])
    assert statement["subject"][0]["digest"]["sha256"] == image["digest"].partition(":")[2]


def _predicate_types(manifest: dict, fetch) -> list[str] | None:
    """The predicate types attached to `manifest` (an image index or manifest), None for a bare
    image manifest; `fetch` reads a manifest by digest."""
    if "manifests" not in manifest:
        return None
    image, attestation = manifest["manifests"]
    assert attestation["annotations"]["vnd.docker.reference.digest"] == image["digest"]
    return [layer["annotations"]["in-toto.io/predicate-type"]
            for layer in fetch(attestation["digest"])["layers"]]


def test_buildx_default_provenance_reaches_pushes_and_oci_archives_only(tmp_path,
                                                                        registry):  # noqa: F811
    """As buildx: min provenance on the push and the OCI archive, none in the docker tarball;
    `--provenance=false` and BUILDX_NO_DEFAULT_ATTESTATIONS=1 turn it off."""
    require(subprocess.run(["which", "skopeo"], capture_output=True).returncode == 0, "skopeo")
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY Dockerfile /\n")
    repository = f"{registry.address}/default-{uuid.uuid4().hex[:8]}"

    def build(tag: str, *flags: str, **environ: str) -> tuple[str, list | None, list | None,
                                                              list | None]:
        out, oci = tmp_path / f"{tag}.tar", tmp_path / f"{tag}.oci.tar"
        result = pybuild("-t", f"{repository}:{tag}", "--push", "--insecure-registry",
                         registry.address, "-o", str(out), "-o", f"type=oci,dest={oci}", *flags,
                         str(tmp_path), env={"PYBUILD_CACHE_DIR": str(tmp_path / "cache")}
                         | environ)
        assert result.returncode == 0, result.stderr

        def pulled(digest: str) -> dict:
            return json.loads(subprocess.run(
                ["skopeo", "inspect", "--tls-verify=false", "--raw",
                 f"docker://{repository}{digest}"], capture_output=True, check=True).stdout)

        def archived(archive: Path) -> list | None:
            with tarfile.open(archive) as tar:
                (top,) = json.load(tar.extractfile("index.json"))["manifests"]
            return _predicate_types(_blob(archive, top["digest"]), partial(_blob, archive)) \
                if top["mediaType"].endswith("index.v1+json") else None
        return (result.stderr, _predicate_types(pulled(f":{tag}"), lambda d: pulled(f"@{d}")),
                archived(oci), archived(out))

    slsa = ["https://slsa.dev/provenance/v0.2"]
    log, pushed, oci, tarball = build("default")
    assert (pushed, oci, tarball) == (slsa, slsa, None)
    assert "buildx's default" in log
    for tag, flags, environ in (("false", ("--provenance=false",), {}),
                                ("env", (), {"BUILDX_NO_DEFAULT_ATTESTATIONS": "1"})):
        log, *found = build(tag, *flags, **environ)
        assert found == [None, None, None] and "generating attestations" not in log
    _, *found = build("asked", "--provenance=true")
    assert found == [slsa, slsa, slsa]


def test_a_tarball_alone_gathers_no_provenance(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY Dockerfile /\n")
    result = pybuild("-o", str(tmp_path / "out.tar"), str(tmp_path),
                     env={"PYBUILD_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 0 and "generating attestations" not in result.stderr


def _context(tmp_path):
    """The context in `tmp_path` as a build walks it (a walk is kept per tree: a new one each
    time, to see changes)."""
    from builder.sources.context import load_ignore
    from builder.sources.tree import ContextTree
    return ContextTree(str(tmp_path), load_ignore(str(tmp_path), None))


def _facts(tmp_path, **changes):
    """Facts of a build of a context in `tmp_path`, with `changes`."""
    from builder.supplychain.provenance import BuildFacts, base_material, context_digest
    (tmp_path / "Dockerfile").write_text("FROM debian:test\n")
    (tmp_path / "app.py").write_text("print(1)\n")
    (tmp_path / ".dockerignore").write_text("ignored\n")
    facts = BuildFacts(b"FROM debian:test\n", "Dockerfile", context_digest(_context(tmp_path)),
                       (base_material("debian:test", "sha256:" + "ab" * 32, "linux/amd64"),),
                       {"TOKEN_NAME": "x", "UNSET": None}, "final", "linux/amd64", None,
                       1_700_000_000.0, 1_700_000_100.0)
    return dataclasses.replace(facts, **changes)


def test_provenance_v02_min_has_no_args_and_max_has_them(tmp_path):
    from builder.supplychain.provenance import provenance_predicate
    low = provenance_predicate(_facts(tmp_path), Attestations(provenance="min"))
    high = provenance_predicate(_facts(tmp_path), Attestations(provenance="max"))
    assert low.type == high.type == "https://slsa.dev/provenance/v0.2"
    assert low.body["invocation"]["parameters"]["args"] == {}
    assert high.body["invocation"]["parameters"]["args"] == {"build-arg:TOKEN_NAME": "x",
                                                             "target": "final"}
    assert low.body["materials"] == [{"uri": "pkg:docker/debian@test?platform=linux%2Famd64",
                                      "digest": {"sha256": "ab" * 32}}]
    assert low.body["invocation"]["configSource"]["digest"]["sha256"] == \
        hashlib.sha256(b"FROM debian:test\n").hexdigest()
    assert low.body["metadata"]["buildStartedOn"] == "2023-11-14T22:13:20.000000Z"
    assert low.body["metadata"]["reproducible"] is False
    assert low.body["builder"]["id"].startswith("https://pybuild.invalid/pybuild@")
    ci = provenance_predicate(_facts(tmp_path), Attestations(provenance="min", builder_id="x"))
    assert ci.body["builder"]["id"] == "x"


def test_provenance_context_digest_follows_the_context_not_the_ignored(tmp_path):
    from builder.supplychain.provenance import context_digest
    _facts(tmp_path)
    first = context_digest(_context(tmp_path))
    (tmp_path / "ignored").write_text("anything")
    assert context_digest(_context(tmp_path)) == first
    (tmp_path / "app.py").write_text("print(2)\n")
    assert context_digest(_context(tmp_path)) != first


def test_provenance_context_digest_takes_a_files_digest_from_a_memo_that_matches_it(tmp_path):
    """The cache's remembered digests spare reading the context again; a memo whose stat fields
    are not the file's any more is not believed."""
    from builder.supplychain.provenance import context_digest
    _facts(tmp_path)
    app = tmp_path / "app.py"
    st = app.stat()
    real = hashlib.sha256(app.read_bytes()).hexdigest()
    memo = {str(app): (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_mode, real)}
    assert context_digest(_context(tmp_path), memo) == context_digest(_context(tmp_path))
    lying = {str(app): memo[str(app)][:5] + ("0" * 64,)}
    assert context_digest(_context(tmp_path), lying) != context_digest(_context(tmp_path))
    app.write_text("print(3)\n")
    assert context_digest(_context(tmp_path), lying) == context_digest(_context(tmp_path))


def test_a_rebuilds_provenance_has_the_context_digest_of_a_full_read(tmp_path):
    """End to end: a build that hashed the context for COPY, then a no-op rebuild (both take
    the digests the cache remembered), name the context by the digest a full read gives; so
    does a build after a file changed with its size and mtime put back (its ctime tells)."""
    from builder.supplychain.provenance import context_digest
    context = tmp_path / "ctx"
    (context / "src").mkdir(parents=True)
    (context / "src" / "app.py").write_text("print(1)\n" * 500)
    data = context / "data.bin"
    data.write_bytes(os.urandom(300_000))
    (context / "Dockerfile").write_text("FROM scratch\nCOPY . /app\n")
    for run in ("cold", "rebuild", "edited"):
        if run == "edited":
            st = data.stat()
            data.write_bytes(os.urandom(300_000))
            os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns))
        expected = context_digest(_context(context))
        out = tmp_path / f"{run}.oci.tar"
        result = pybuild("--provenance=true", "-o", f"type=oci,dest={out}", str(context),
                         env={"PYBUILD_CACHE_DIR": str(tmp_path / "cache")})
        assert result.returncode == 0, result.stderr
        statement = _attestation(out)[2]
        locals_ = statement["predicate"]["invocation"]["parameters"]["locals"]
        assert locals_[0] == {"name": "context", "digest": {"sha256": expected}}, run


def test_provenance_walks_the_context_the_copy_walked(tmp_path, monkeypatch):
    """The context digest takes the walk a COPY of the whole context made (one lstat per file
    per build, not two: the second walk was 0.15 s of each push of a 20,000-file context)."""
    import io

    from builder.api import BuildRequest, build
    from builder.output.spec import parse_output
    from builder.progress.sinks import JsonSink
    from builder.sources import context as context_module
    from builder.supplychain.provenance import context_digest
    context = tmp_path / "ctx"
    (context / "src").mkdir(parents=True)
    (context / "src" / "app.py").write_text("print(1)\n")
    (context / "Dockerfile").write_text("FROM scratch\nCOPY . /app\n")
    walks: list[str] = []
    entries = context_module.entries

    def counted(root, matcher, below, make):
        walks.append(below)
        return entries(root, matcher, below, make)
    monkeypatch.setattr(context_module, "entries", counted)
    out = tmp_path / "image.oci.tar"
    build(BuildRequest(context=str(context), output=None,
                       exports=(parse_output(f"type=oci,dest={out}"),),
                       cache_dir=str(tmp_path / "cache"),
                       attestations=Attestations(provenance="min")), JsonSink(io.StringIO()))
    assert walks == [""], "one walk of the whole context"
    locals_ = _attestation(out)[2]["predicate"]["invocation"]["parameters"]["locals"]
    assert locals_[0]["digest"]["sha256"] == context_digest(_context(context))


def test_provenance_v1_and_reproducible_with_source_date_epoch(tmp_path):
    from builder.supplychain.provenance import provenance_predicate
    facts = _facts(tmp_path, source_date_epoch=0)
    predicate = provenance_predicate(facts, Attestations(provenance="min",
                                                         provenance_version="v1"))
    assert predicate.type == "https://slsa.dev/provenance/v1"
    assert predicate.body["runDetails"]["metadata"] == {"reproducible": True}
    assert predicate.body["buildDefinition"]["internalParameters"]["SOURCE_DATE_EPOCH"] == "0"
    again = provenance_predicate(_facts(tmp_path, source_date_epoch=0, started=5.0,
                                        finished=9.0),
                                 Attestations(provenance="min", provenance_version="v1"))
    assert again == predicate  # no clock in it: a rebuild attests the same bytes


def test_provenance_never_holds_a_secret(sbom_build, tmp_path):
    """A secret mounted into RUN, and a build arg naming it, mode=max: the value is nowhere in
    the tarball, attestations included."""
    work, context, env, name, _ = sbom_build
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    (tmp_path / "token").write_text(secret)
    (context / "Dockerfile.secret").write_text(
        DOCKERFILE + "ARG WHICH\nRUN --mount=type=secret,id=tok test -s /run/secrets/tok\n")
    out = tmp_path / "image.tar"
    result = pybuild("--network", "none", "--provenance=mode=max", "--sbom=true",
                     "--build-arg", "WHICH=tok", "--secret", f"id=tok,src={tmp_path / 'token'}",
                     "-f", str(context / "Dockerfile.secret"), "-o", str(out), str(context),
                     env=env)
    assert result.returncode == 0, result.stderr
    assert secret.encode() not in out.read_bytes()
    _, manifest, _ = _attestation(out)
    types = [layer["annotations"]["in-toto.io/predicate-type"] for layer in manifest["layers"]]
    assert types == ["https://spdx.dev/Document", "https://slsa.dev/provenance/v0.2"]
    provenance = _blob(out, manifest["layers"][1]["digest"])["predicate"]
    assert provenance["invocation"]["parameters"]["args"] == {"build-arg:WHICH": "tok"}
    assert [m["uri"] for m in provenance["materials"]] == [
        "pkg:docker/debian@test?platform=linux%2Famd64"]
