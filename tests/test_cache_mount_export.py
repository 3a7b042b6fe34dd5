"""Cache mounts that survive the runner: `--cache-to ...,mounts=true` exports the build's RUN
--mount=type=cache directories with the step cache (to a directory and to a real registry), and
`--cache-from` restores one on an empty runner before the first step that uses it runs, and only
then. Also: an unchanged mount is not sent again, private mounts and mounts over `mount-max` stay
home, and a hostile export cannot write outside the mount."""
from __future__ import annotations

import gzip
import io
import json
import os
import re
import tarfile
import uuid
from pathlib import Path

import pytest

from builder.cache.mounts import listed
from layers.cachemanifest import CacheLayer, MountBlob, config_bytes, manifest_bytes, parse
from layers.image import OCI_MANIFEST, dumps, sha256_digest
from tests.registry_support import registry  # noqa: F401  (a fixture)
from tests.support import busybox_base, pybuild
from tests.test_cache import steps

# The mount step "downloads" 20 packages into its cache unless they are there (as apt or pip do),
# with a symlink, a hard link and a file of another owner and mode among them.
FETCH = ('RUN --mount=type=cache,id=fetch,target=/var/cache/fetch '
         'if [ -f /var/cache/fetch/done ]; then echo REUSED; else echo FETCHED; '
         'mkdir -p /var/cache/fetch/pkgs && '
         'for i in $(seq 1 20); do echo "package $i" > /var/cache/fetch/pkgs/p$i.deb; done && '
         'ln -s pkgs/p1.deb /var/cache/fetch/latest && '
         'ln /var/cache/fetch/pkgs/p2.deb /var/cache/fetch/hard && '
         'chown 1234:5678 /var/cache/fetch/pkgs/p3.deb && chmod 0640 /var/cache/fetch/pkgs/p3.deb && '
         'touch /var/cache/fetch/done; fi && ls /var/cache/fetch/pkgs | wc -l > /count\n')
DOCKERFILE = ("FROM busybox:test\nCOPY source.txt /source.txt\n" + FETCH
              + "COPY later.txt /later.txt\nRUN cat /later.txt > /seen\n")


@pytest.fixture
def runner(tmp_path: Path):
    """A project, and a way to build it on an 'ephemeral runner': a cache root of its own."""
    base = busybox_base(tmp_path)
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(DOCKERFILE)
    (context / "source.txt").write_text("source 1\n")
    (context / "later.txt").write_text("later 1\n")

    def build(name: str, *args: str, ok: bool = True) -> tuple[str, Path]:
        cache = tmp_path / name
        env = {"PYBUILD_CACHE_DIR": str(cache)}
        if not cache.exists():
            assert pybuild("load", "-q", "-i", str(base), env=env).returncode == 0
        result = pybuild("--progress", "plain", "--network", "none", "-o",
                         str(tmp_path / f"{name}.tar"), *args, str(context), env=env)
        assert (result.returncode == 0) == ok, result.stderr
        return result.stderr, cache
    return context, build


def _said(log: str) -> list[str]:
    """What the mount step printed: FETCHED or REUSED."""
    return re.findall(r"^#\d+ [\d.]+ (FETCHED|REUSED)$", log, re.MULTILINE)


def _mount_data(cache: Path, ident: str) -> Path | None:
    for mount in listed(str(cache)):
        if mount.id == ident:
            return Path(mount.path) / "data"
    return None


def _layout_blobs(directory: Path) -> set[str]:
    return set(os.listdir(directory / "blobs" / "sha256"))


def _exported_mounts(directory: Path) -> dict[str, dict]:
    index = json.loads((directory / "index.json").read_text())
    blobs = directory / "blobs" / "sha256"
    manifest = json.loads((blobs / index["manifests"][0]["digest"].partition(":")[2]).read_text())
    config = json.loads((blobs / manifest["config"]["digest"].partition(":")[2]).read_text())
    return {m["id"]: m for m in config.get("mounts", [])}


def _check_restored(data: Path) -> None:
    """The mount as the first runner's RUN left it: files, owner, mode, symlink, hard link."""
    assert len(os.listdir(data / "pkgs")) == 20
    assert (data / "pkgs" / "p7.deb").read_text() == "package 7\n"
    st = os.lstat(data / "pkgs" / "p3.deb")
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1234, 5678, 0o640)
    assert os.readlink(data / "latest") == "pkgs/p1.deb"
    assert os.stat(data / "hard").st_ino == os.stat(data / "pkgs" / "p2.deb").st_ino


@pytest.mark.parametrize("destination", ["local", "registry"])
def test_an_empty_runner_gets_the_mount_only_when_its_step_runs(runner, request, tmp_path,
                                                               destination) -> None:
    context, build = runner
    if destination == "local":
        to = f"type=local,dest={tmp_path / 'shared'}"
        from_ = f"type=local,src={tmp_path / 'shared'}"
    else:
        server = request.getfixturevalue("registry")
        ref = f"{server.address}/cache-{uuid.uuid4().hex[:8]}:main"
        to, from_ = f"type=registry,ref={ref}", ref
    log, first = build("one", "--cache-to", to + ",mounts=true")
    assert _said(log) == ["FETCHED"]
    assert re.search(r"cache mount fetch: \d+B of files, blob sha256:\S+ [\d.]+k?B, sent", log), log

    # One source change before the mount step: its RUN runs on an empty runner, with the mount
    # restored first (20 packages, not fetched again).
    (context / "source.txt").write_text("source 2\n")
    log, second = build("two", "--cache-from", from_)
    assert steps(log) == ["source.txt changed", "an earlier step changed",
                          "an earlier step changed", "an earlier step changed"], log
    assert "importing cache mount fetch from" in log and _said(log) == ["REUSED"], log
    assert re.search(r"importing cache mount fetch from .*\n#\d+ [\d,]+ entries, \d+B of files "
                     r"\([\d.]+k?B fetched\)", log), log
    _check_restored(_mount_data(second, "fetch"))

    # Against the export, only a later step changed: the mount step is a hit, and nothing of the
    # mount is fetched; exported again, the imported mount is named, not sent.
    (context / "source.txt").write_text("source 1\n")
    (context / "later.txt").write_text("later 2\n")
    log, third = build("three", "--cache-from", from_, "--cache-to", to + ",mounts=true")
    assert steps(log) == ["CACHED", "CACHED", "later.txt changed", "an earlier step changed"], log
    assert "importing cache mount" not in log
    assert re.search(r"cache mount fetch: \d+B of files, blob \S+ [\d.]+k?B, unchanged, not sent",
                     log), log
    assert _mount_data(third, "fetch") is None
    if destination == "local":
        diff_id = _exported_mounts(tmp_path / "shared")["fetch"]["diff_id"]
        assert not (third / "blobs" / "sha256" / diff_id.partition(":")[2]).exists()


def test_a_mount_is_restored_into_an_empty_one_never_over_files(runner, tmp_path) -> None:
    context, build = runner
    shared = tmp_path / "shared"
    build("one", "--cache-to", f"type=local,dest={shared},mounts=true")
    project = (context / "Dockerfile").read_text()
    (context / "source.txt").write_text("source 2\n")
    for runner_name, command in (("empty", "true"), ("own", "echo own > /f/own")):
        (context / "Dockerfile").write_text(
            f"FROM busybox:test\nRUN --mount=type=cache,id=fetch,target=/f {command}\n")
        _, cache = build(runner_name)
        (context / "Dockerfile").write_text(project)
        log, _ = build(runner_name, "--cache-from", f"type=local,src={shared}")
        data = _mount_data(cache, "fetch")
        if runner_name == "empty":  # the mount was there, empty: filled
            assert "importing cache mount fetch" in log and _said(log) == ["REUSED"], log
            _check_restored(data)
        else:  # the runner's own files are kept, nothing is merged into them
            assert "importing cache mount" not in log and _said(log) == ["FETCHED"], log
            assert (data / "own").read_text() == "own\n"


def test_an_unchanged_mount_is_not_written_again(runner, tmp_path) -> None:
    context, build = runner
    shared = tmp_path / "shared"
    to, from_ = f"type=local,dest={shared},mounts=true", f"type=local,src={shared}"
    build("one", "--cache-to", to)
    exported = _exported_mounts(shared)["fetch"]
    before = _layout_blobs(shared)

    # The same runner, a later step changed: the mount is packed again, to the same blob.
    (context / "later.txt").write_text("later 2\n")
    log, _ = build("one", "--cache-to", to)
    assert "cache mount fetch:" in log and "unchanged, not sent" in log, log
    assert _exported_mounts(shared)["fetch"] == exported
    mount_blob = _manifest_digest_of(shared, exported["diff_id"])
    assert mount_blob in before
    assert len(_layout_blobs(shared) - before) == 4  # two changed steps' layers, config, manifest

    # An empty runner whose mount step is a hit carries the imported mount forward, unsent.
    (context / "later.txt").write_text("later 3\n")
    log, cache = build("two", "--cache-from", from_, "--cache-to", to)
    assert "importing cache mount" not in log and "unchanged, not sent" in log, log
    assert _mount_data(cache, "fetch") is None
    assert _exported_mounts(shared)["fetch"] == exported


def _manifest_digest_of(shared: Path, diff_id: str) -> str:
    """The blob (hex) the export's manifest holds for a layer's diff ID."""
    index = json.loads((shared / "index.json").read_text())
    blobs = shared / "blobs" / "sha256"
    manifest = json.loads((blobs / index["manifests"][0]["digest"].partition(":")[2]).read_text())
    for layer in manifest["layers"]:
        if layer["annotations"]["org.pybuild.layer.diff_id"] == diff_id:
            return layer["digest"].partition(":")[2]
    raise AssertionError(f"no layer {diff_id}")


def test_private_mounts_and_mounts_over_the_limit_stay_home(runner, tmp_path) -> None:
    context, build = runner
    (context / "Dockerfile").write_text(
        DOCKERFILE + "RUN --mount=type=cache,id=mine,target=/m,sharing=private "
                     "echo secret-ish > /m/kept\n")
    shared = tmp_path / "shared"
    log, _ = build("one", "--cache-to", f"type=local,dest={shared},mounts=true,mount-max=100")
    assert re.search(r"WARNING: cache mount fetch not exported to .*: \d+B is over mount-max "
                     r"100B", log), log
    assert _exported_mounts(shared) == {}
    assert "cache mount mine" not in log

    log, _ = build("two", "--cache-to", f"type=local,dest={shared},mounts=true")
    assert set(_exported_mounts(shared)) == {"fetch"}


def test_without_mounts_true_no_mount_is_exported(runner, tmp_path) -> None:
    _, build = runner
    shared = tmp_path / "shared"
    log, _ = build("one", "--cache-to", f"type=local,dest={shared}")
    assert "cache mount" not in log
    assert _exported_mounts(shared) == {}


# -- the manifest's mounts ---------------------------------------------------------------------

LAYER = CacheLayer("sha256:" + "1" * 64, "sha256:" + "2" * 64, 10,
                   "application/vnd.oci.image.layer.v1.tar+gzip")
DAMAGED = [
    # (the config's "mounts", what the error names)
    ([{"id": "", "diff_id": LAYER.diff_id, "size": 1}], "cache mount ''"),
    ([{"id": "pip", "diff_id": "sha256:" + "3" * 64, "size": 1}], "cache mount 'pip'"),
    ([{"id": "pip", "diff_id": LAYER.diff_id, "size": -1}], "cache mount 'pip'"),
    ([{"id": "pip", "diff_id": LAYER.diff_id, "size": "big"}], "cache mount 'pip'"),
    ([{"id": 7, "diff_id": LAYER.diff_id, "size": 1}], "cache mount 7"),
    ([{"id": "pip", "size": 1}], "'diff_id'"),
    ("pip", "damaged"),
]


def test_mounts_round_trip_through_the_manifest() -> None:
    mounts = (MountBlob("pip", LAYER.diff_id, 1234),)
    config = config_bytes((), {}, mounts)
    assert parse(manifest_bytes(config, (LAYER,)), config).mounts == mounts
    config = config_bytes((), {})
    assert b"mounts" not in config and parse(manifest_bytes(config, (LAYER,)), config).mounts == ()


@pytest.mark.parametrize("mounts, named", DAMAGED)
def test_a_damaged_mount_entry_is_refused(mounts, named) -> None:
    config = json.dumps({"format": 1, "records": [], "manifests": {}, "mounts": mounts}).encode()
    with pytest.raises(ValueError) as caught:
        parse(manifest_bytes(config, (LAYER,)), config)
    assert "a damaged cache manifest" in str(caught.value) and named in str(caught.value)


# -- hostile imports --------------------------------------------------------------------------

def _member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"x", link: str = "",
            device: tuple[int, int] = (0, 0)) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    info.devmajor, info.devminor = device
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data if kind == tarfile.REGTYPE else None


def _hostile_export(directory: Path, members) -> None:
    """An OCI layout holding a cache whose mount `evil` is the tar of `members`."""
    body = io.BytesIO()
    with tarfile.open(fileobj=body, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    tar = body.getvalue()
    packed = gzip.compress(tar, mtime=0)
    layer = CacheLayer(sha256_digest(tar), sha256_digest(packed), len(packed),
                       "application/vnd.oci.image.layer.v1.tar+gzip")
    config = config_bytes((), {}, (MountBlob("evil", layer.diff_id, len(tar)),))
    manifest = manifest_bytes(config, (layer,))
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    for data in (packed, config, manifest):
        (blobs / sha256_digest(data).partition(":")[2]).write_bytes(data)
    (directory / "index.json").write_bytes(dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": sha256_digest(manifest), "size": len(manifest),
         "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}))


ATTACKS = [
    # (what, members, written inside the mount, warning or None)
    ("a name that climbs out", [_member("../../escaped")], [], "path leads outside the root"),
    ("an absolute name", [_member("/OUTSIDE/abs")], ["OUTSIDE/abs"], None),
    ("a file through an absolute symlink", [_member("out", tarfile.SYMTYPE, link="/OUTSIDE"),
                                            _member("out/planted")], ["OUTSIDE/planted"], None),
    ("a file through a climbing symlink", [_member("up", tarfile.SYMTYPE, link="../../../.."),
                                           _member("up/OUTSIDE/planted")], ["OUTSIDE/planted"],
     None),
    ("a hard link to a host file", [_member("pw", tarfile.LNKTYPE, link="/OUTSIDE/host")], [],
     "is not in the root"),
    ("a device node", [_member("disk", tarfile.CHRTYPE, device=(1, 3)), _member("ok")], ["ok"],
     "disk: device node skipped (not allowed here)"),
]


@pytest.mark.parametrize("what, members, inside, warning", ATTACKS, ids=[a[0] for a in ATTACKS])
def test_a_hostile_mount_cannot_write_outside_the_mount(tmp_path, what, members, inside,
                                                         warning) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "host").write_text("host file\n")
    members = [(_renamed(info, str(outside)), data) for info, data in members]
    _hostile_export(tmp_path / "evil", members)
    base = busybox_base(tmp_path)
    cache = tmp_path / "cache"
    env = {"PYBUILD_CACHE_DIR": str(cache)}
    assert pybuild("load", "-q", "-i", str(base), env=env).returncode == 0
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(
        "FROM busybox:test\nRUN --mount=type=cache,id=evil,target=/c ls -R /c > /listed\n")
    result = pybuild("--progress", "plain", "--network", "none", "-o", str(tmp_path / "i.tar"),
                     "--cache-from", f"type=local,src={tmp_path / 'evil'}", str(context), env=env)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(outside)) == ["host"]
    assert (outside / "host").read_text() == "host file\n"
    assert not (tmp_path / "escaped").exists() and not (cache / "escaped").exists()
    data = _mount_data(cache, "evil")
    found = sorted(os.path.relpath(os.path.join(d, name), data)
                   for d, _, names in os.walk(data) for name in names
                   if not os.path.islink(os.path.join(d, name)))
    assert found == sorted(p.replace("OUTSIDE", str(outside).lstrip("/")) for p in inside)
    if warning:
        assert warning in result.stderr, result.stderr


def _renamed(info: tarfile.TarInfo, outside: str) -> tarfile.TarInfo:
    """`OUTSIDE` in a name or link target stands for the test's outside directory."""
    info.name = info.name.replace("/OUTSIDE", outside).replace("OUTSIDE", outside.lstrip("/"))
    info.linkname = info.linkname.replace("/OUTSIDE", outside)
    return info
