"""Device nodes of images (a base image's layers, an ADD archive) stay in the image exactly as
Docker keeps them, and are never usable: not by a RUN (its root is mounted nodev; under chroot
they are inert placeholders; rootless snapshots leave them out), and not by another user of the
host (the cache root is 0700 when pybuild runs as root).

The block device is a loop device over a canary file where losetup can make one, so a RUN that
could open it would read (or overwrite) the canary; 1:5 (/dev/zero's numbers) and 1:3
(/dev/null's) are the character devices: a RUN that reads one byte of either has opened it.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import pytest

from builder.cache.root import secure_cache_dir
from builder.sandbox.chroot import probe as chroot_probe
from builder.sources.tree import StageTree
from builder.steps.users import UnknownUser, resolve_run_user
from layers.union import UnionView
from layers.walkdiff import WorkingRoot
from tests.rootless_user import EPOCH, rootless_user
from tests.support import busybox_base, docker, pybuild, require

CANARY = b"CANARY-" + uuid.uuid4().hex.encode()
PROBE = """\
RUN for f in /base/blk /base/zero /base/null /x/blk /x/zero /x/null; do \\
      if head -c1 "$f" > /dev/null; then echo "opened $f"; exit 1; fi; \\
    done
"""
CHANGES = """\
RUN chmod 600 /x/null && rm /base/zero
RUN touch /y
"""
# What a root build (any strategy) runs: the probe, writes, then chmod and rm on the nodes.
# Docker's device cgroup lets any node with /dev/null's or /dev/zero's numbers be opened (pybuild
# refuses them all), so its build is given the changes without the probes.
DOCKER_DOCKERFILE = "ARG BASE\nFROM $BASE\nADD dev.tar /x/\n" + CHANGES
DOCKERFILE = "ARG BASE\nFROM $BASE\nADD dev.tar /x/\n" + PROBE + """\
RUN for f in /base/blk /x/blk /x/null; do \\
      if printf pwned > "$f"; then echo "wrote $f"; exit 1; fi; \\
    done
""" + CHANGES
# Rootless snapshots have no nodes to chmod or remove: the probe, and a step beside them.
ROOTLESS_DOCKERFILE = "ARG BASE\nFROM $BASE\nADD dev.tar /x/\n" + PROBE + "RUN touch /y\n"
REFUSED = {"namespaces": "Permission denied", "namespaces-copy": "Permission denied",
           "chroot": "No such device or address"}


@pytest.fixture(scope="module")
def busybox(tmp_path_factory) -> Path:
    return busybox_base(tmp_path_factory.mktemp("busybox"))


@pytest.fixture(scope="module")
def block_device(tmp_path_factory):
    """(major, minor, canary file) of a loop device over the canary, or of loop0's numbers and
    no canary where losetup cannot make one."""
    canary = tmp_path_factory.mktemp("canary") / "disk.img"
    canary.write_bytes(CANARY + bytes(65536))
    made = None
    if shutil.which("losetup"):
        made = subprocess.run(["losetup", "--find", "--show", str(canary)], capture_output=True,
                              text=True)
    if made is None or made.returncode != 0:
        yield 7, 0, None
        return
    device = made.stdout.strip()
    try:
        number = os.stat(device).st_rdev
        yield os.major(number), os.minor(number), canary
    finally:
        subprocess.run(["losetup", "-d", device], check=False)
    assert canary.read_bytes().startswith(CANARY)


def device_tar(prefix: str, block: tuple[int, int]) -> bytes:
    """A tar of a block device and the two character devices, 0666, under `prefix`."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as archive:
        for name, kind, (major, minor) in (("blk", tarfile.BLKTYPE, block),
                                           ("zero", tarfile.CHRTYPE, (1, 5)),
                                           ("null", tarfile.CHRTYPE, (1, 3))):
            member = tarfile.TarInfo(prefix + name)
            member.type, member.mode, member.mtime = kind, 0o666, 1_600_000_000
            member.devmajor, member.devminor = major, minor
            archive.addfile(member)
    return data.getvalue()


@pytest.fixture(scope="module")
def base(tmp_path_factory, busybox, block_device) -> tuple[str, Path]:
    """(tag, archive) of a base image whose top layer holds the devices under /base."""
    work = tmp_path_factory.mktemp("base")
    tag = f"pybuild-devices-{uuid.uuid4().hex[:10]}:latest"
    (work / "context").mkdir()
    (work / "context" / "dev.tar").write_bytes(device_tar("base/", block_device[:2]))
    (work / "context" / "Dockerfile").write_text("FROM busybox:test\nADD dev.tar /\n")
    env = {"PYBUILD_CACHE_DIR": str(work / "cache"), "SOURCE_DATE_EPOCH": EPOCH}
    assert pybuild("load", "-i", str(busybox), env=env).returncode == 0
    result = pybuild("-t", tag, "-o", str(work / "base.tar"), str(work / "context"), env=env)
    assert result.returncode == 0, result.stderr
    return tag, work / "base.tar"


def build(work: Path, base: tuple[str, Path], block: tuple[int, int], dockerfile: str,
          *options: str, env: dict | None = None):
    """Build as root with a cache of its own; returns (result, image ID, output tarball)."""
    context = work / "context"
    context.mkdir(parents=True)
    (context / "Dockerfile").write_text(dockerfile)
    (context / "dev.tar").write_bytes(device_tar("", block))
    env = {"PYBUILD_CACHE_DIR": str(work / "cache"), "SOURCE_DATE_EPOCH": EPOCH, **(env or {})}
    assert pybuild("load", "-i", str(base[1]), env=env).returncode == 0
    output = work / "image.tar"
    result = pybuild("--progress", "plain", "--build-arg", f"BASE={base[0]}", "--iidfile",
                     str(work / "iid"), "-o", str(output), *options, str(context), env=env)
    return result, (work / "iid").read_text() if result.returncode == 0 else "", output


def layer_entries(tarball: Path) -> list[dict[str, tuple]]:
    """Per layer of the image in `tarball`: name -> (type, mode, major, minor) of its entries."""
    with tarfile.open(tarball) as archive:
        manifest = json.load(archive.extractfile("manifest.json"))[0]
        layers = []
        for name in manifest["Layers"]:
            with tarfile.open(fileobj=archive.extractfile(name)) as layer:
                layers.append({m.name: (m.type, m.mode, m.devmajor, m.devminor)
                               for m in layer.getmembers()})
        return layers


def devices_of(entries: dict[str, tuple]) -> dict[str, tuple]:
    return {name: e for name, e in entries.items() if e[0] in (tarfile.CHRTYPE, tarfile.BLKTYPE)}


STRATEGIES = {"namespaces": ("--isolation", "namespaces"),
              "namespaces-copy": ("--isolation", "namespaces"),
              "chroot": ("--isolation", "chroot")}


@pytest.fixture(scope="module")
def built(tmp_path_factory, base, block_device) -> dict[str, tuple]:
    """The root builds of DOCKERFILE, one per strategy."""
    results = {}
    for name, options in STRATEGIES.items():
        if name == "chroot":
            require(chroot_probe(str(tmp_path_factory.getbasetemp())) is None, "the chroot sandbox")
        env = {"PYBUILD_NO_OVERLAY": "1"} if name == "namespaces-copy" else {}
        results[name] = build(tmp_path_factory.mktemp(name), base, block_device[:2], DOCKERFILE,
                              *options, env=env)
    return results


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_run_cannot_open_the_image_device_nodes(built, strategy):
    result, image, _ = built[strategy]
    assert result.returncode == 0, result.stderr
    assert "opened /" not in result.stderr and "wrote /" not in result.stderr
    assert f"head: /x/zero: {REFUSED[strategy]}" in result.stderr
    assert f"head: /base/blk: {REFUSED[strategy]}" in result.stderr


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_layers_keep_the_nodes_as_docker_does(built, strategy, block_device):
    """The base layer and the ADD layer list the nodes with their numbers; a RUN that leaves
    them alone records none, one that chmods or removes one records just that."""
    major, minor = block_device[:2]
    result, _, output = built[strategy]
    assert result.returncode == 0, result.stderr
    layers = layer_entries(output)
    assert devices_of(layers[1]) == {"base/blk": (tarfile.BLKTYPE, 0o666, major, minor),
                                     "base/zero": (tarfile.CHRTYPE, 0o666, 1, 5),
                                     "base/null": (tarfile.CHRTYPE, 0o666, 1, 3)}
    assert devices_of(layers[2]) == {"x/blk": (tarfile.BLKTYPE, 0o666, major, minor),
                                     "x/zero": (tarfile.CHRTYPE, 0o666, 1, 5),
                                     "x/null": (tarfile.CHRTYPE, 0o666, 1, 3)}
    # the probes changed nothing (no layer); then the chmod and rm, then the touch
    assert len(layers) == 5
    assert {n: e for n, e in layers[3].items() if e[0] != tarfile.DIRTYPE} == {
        "x/null": (tarfile.CHRTYPE, 0o600, 1, 3), "base/.wh.zero": (tarfile.REGTYPE, 0, 0, 0)}
    assert set(layers[4]) == {"y"}


def test_every_strategy_makes_the_same_image(built):
    images = {name: built[name][1] for name in STRATEGIES}
    assert len(set(images.values())) == 1, images


def test_other_users_cannot_reach_the_cache(built):
    """Nothing under a root build's cache can be opened by another user of the host: the cache
    root is 0700 (here, as pybuild made it)."""
    require(shutil.which("setpriv") is not None, "setpriv (package util-linux)")
    cache = built["namespaces"][2].parent / "cache"
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o700
    paths = [str(cache)]
    nodes = []
    for directory, dirs, files in os.walk(cache):
        for name in dirs + files:
            path = os.path.join(directory, name)
            paths.append(path)
            if stat.S_ISCHR(os.lstat(path).st_mode) or stat.S_ISBLK(os.lstat(path).st_mode):
                nodes.append(path)
    assert any(os.lstat(n).st_rdev == os.makedev(1, 5) for n in nodes)  # the snapshots have them
    script = ("import json, os, sys\nopened = []\nfor path in json.load(sys.stdin):\n"
              "    try:\n        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))\n"
              "    except PermissionError:\n        continue\n    opened.append(path)\n"
              "print(json.dumps(opened))\n")
    checked = subprocess.run(["setpriv", "--reuid", "65534", "--regid", "65534",
                              "--clear-groups", sys.executable, "-c", script],
                             input=json.dumps(paths), capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout) == []


def test_an_existing_cache_root_and_made_parents_become_private(tmp_path):
    existing = tmp_path / "old"
    existing.mkdir(mode=0o755)
    os.chmod(existing, 0o755)
    secure_cache_dir(str(existing))
    assert stat.S_IMODE(os.stat(existing).st_mode) == 0o700
    os.chmod(tmp_path, 0o755)
    secure_cache_dir(str(tmp_path / "a" / "b" / "cache"))
    for path in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "cache"):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o700, path
    assert stat.S_IMODE(os.stat(tmp_path).st_mode) == 0o755  # not made by pybuild: left alone


def test_docker_exports_the_same_nodes(built, base, block_device, images, tmp_path):
    """`docker export` of the loaded image shows the nodes as `docker build` of the same
    Dockerfile (without the probes) makes them."""
    result, _, output = built["namespaces"]
    assert result.returncode == 0, result.stderr
    images.names.append(base[0])
    docker("load", "-i", str(base[1]))
    loaded = images.name("pybuild-devices-out")
    docker("tag", images.load(output).split()[-1], loaded)
    reference = images.name("pybuild-devices-docker")
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(DOCKER_DOCKERFILE)
    (context / "dev.tar").write_bytes(device_tar("", block_device[:2]))
    docker("build", "--network", "none", "--build-arg", f"BASE={base[0]}", "-t", reference,
           str(context))
    exported = {name: exported_nodes(images, name) for name in (loaded, reference)}
    assert exported[loaded] == exported[reference]
    assert exported[loaded]["x/null"] == (tarfile.CHRTYPE, 0o600, 1, 3)
    assert exported[loaded]["base/blk"] == (tarfile.BLKTYPE, 0o666, *block_device[:2])
    assert "base/zero" not in exported[loaded]


def exported_nodes(images, name: str) -> dict[str, tuple]:
    container = f"pybuild-devices-{uuid.uuid4().hex[:10]}"
    images.containers.append(container)
    docker("create", "--name", container, name, "true")
    data = docker("export", container).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        return devices_of({m.name: (m.type, m.mode & 0o7777, m.devmajor, m.devminor)
                           for m in archive.getmembers()
                           if m.name.startswith(("x/", "base/"))})


def test_rootless_keeps_the_nodes_in_the_layers(base, block_device, tmp_path):
    """A rootless build cannot make device nodes: its RUN does not see them, and its image is
    the one a root build makes of the same Dockerfile, nodes in the layers included."""
    block = block_device[:2]
    root_result, root_image, output = build(tmp_path, base, block,
                                            ROOTLESS_DOCKERFILE.replace("$BASE", base[0]))
    assert root_result.returncode == 0, root_result.stderr
    assert len(devices_of(layer_entries(output)[2])) == 3
    with rootless_user(base[1]) as user:
        user.grant(ranges=True)
        result, image = user.build(ROOTLESS_DOCKERFILE.replace("$BASE", base[0]),
                                   {"dev.tar": device_tar("", block)})
    assert result.returncode == 0, result.stderr
    assert "sandbox: rootless" in result.stderr
    assert image == root_image


# -- the pieces ---------------------------------------------------------------------------------

@pytest.fixture
def snapshot(tmp_path) -> Path:
    """A snapshot with x/null (1:3, 0666) and x/blk (block 7:0, 0640, owner 5:6)."""
    layer = tmp_path / "snapshot"
    (layer / "x").mkdir(parents=True)
    os.mknod(layer / "x/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.chmod(layer / "x/null", 0o666)
    os.mknod(layer / "x/blk", stat.S_IFBLK | 0o640, os.makedev(7, 0))
    os.chown(layer / "x/blk", 5, 6)
    for path in (layer / "x/null", layer / "x/blk"):
        os.utime(path, ns=(1_600_000_000_000_000_000,) * 2, follow_symlinks=False)
    return layer


@pytest.mark.parametrize("command, expected", [
    ("", {}),
    ("cat x/null", {}),
    ("chmod 600 x/null", {"x/null": ("char", 0o600, (1, 3), (0, 0))}),
    ("chown 7:8 x/blk", {"x/blk": ("block", 0o640, (7, 0), (7, 8))}),
    ("rm x/null", {"x/null": ("char", 0, (0, 0), (0, 0))}),
    ("rm x/null && echo data > x/null", {"x/null": ("file", 0o644, None, (0, 0))}),
])
def test_chroot_placeholders_diff_back_as_the_nodes(snapshot, tmp_path, command, expected):
    """In a working root without device nodes, each is a socket placeholder that cannot be
    opened; the walk diff reads it back as the node it stands for."""
    view = UnionView([str(snapshot)])
    root, upper = tmp_path / "root", tmp_path / "upper"
    root.mkdir()
    upper.mkdir()
    working = WorkingRoot(str(root), devices=False)
    working.extend([str(snapshot)], view.form, ("sha256:x",))
    assert stat.S_ISSOCK(os.lstat(root / "x/null").st_mode)
    assert stat.S_IMODE(os.lstat(root / "x/blk").st_mode) == 0o640
    with pytest.raises(OSError):
        os.open(root / "x/blk", os.O_RDONLY)
    if command:
        subprocess.run(["sh", "-c", command], cwd=root, check=False, capture_output=True)
    working.diff(str(upper), view)
    found = {}
    for path in upper.rglob("*"):
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode):
            continue
        kind = ("char" if stat.S_ISCHR(st.st_mode) else "block" if stat.S_ISBLK(st.st_mode)
                else "file")
        numbers = (os.major(st.st_rdev), os.minor(st.st_rdev)) if kind != "file" else None
        found[str(path.relative_to(upper))] = (kind, stat.S_IMODE(st.st_mode), numbers,
                                               (st.st_uid, st.st_gid))
    assert found == expected


def test_the_copy_fallback_keeps_real_nodes(snapshot, tmp_path):
    """The namespaces strategy's copy is mounted nodev: it holds the real nodes."""
    root = tmp_path / "root"
    root.mkdir()
    WorkingRoot(str(root), devices=True).extend([str(snapshot)], "overlay", ("sha256:x",))
    assert os.lstat(root / "x/blk").st_rdev == os.makedev(7, 0)
    assert stat.S_ISBLK(os.lstat(root / "x/blk").st_mode)


def test_a_device_passwd_is_never_opened(tmp_path):
    """pybuild reads the image's /etc/passwd on the host: a node there (here one no driver
    answers, which fails to open) counts as missing."""
    (tmp_path / "etc").mkdir()
    os.mknod(tmp_path / "etc/passwd", stat.S_IFCHR | 0o644, os.makedev(240, 240))
    tree = StageTree(UnionView([str(tmp_path)]))
    with pytest.raises(UnknownUser):
        resolve_run_user("app", tree)
    assert resolve_run_user("0", tree).uid == 0
