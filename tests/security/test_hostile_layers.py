"""Hostile layer tars, end to end through the CLI: as a layer of a base image (`pybuild load -i`,
then a build that unpacks it for a RUN) and as an archive that `ADD x.tar /d/` extracts.

Every attack aims at a canary directory beside the cache. The outcome is either refusal (a clear
error, naming the Dockerfile line for ADD, no traceback) or containment (the entry lands inside
the image, where a RUN finds it), and the canary is untouched either way. The unit cases of the
unpacker itself (each entry kind against `layers.unpack.apply_layer`) are in tests/test_unpack.py.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import pytest

from tests.support import busybox_base, pybuild, require
from tests.test_unpack import snapshot, tar_of

REG, DIR, SYM, LNK = tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE
UP = "../" * 40  # more than any cache path is deep
CANARY = "CANARY"  # replaced by the canary directory's absolute path


def refused(pattern: str) -> tuple[str, str]:
    return ("refused", pattern)


def contained(probe: str, output: str) -> tuple[str, str, str]:
    """Built; `probe`, run in the image, prints `output`."""
    return ("contained", probe, output)


LONG_COMPONENT = "x" * 300
LONG_PATH = "/".join(["p" * 200] * 25) + "/f"  # 5,026 bytes: beyond PATH_MAX
PAX_NAME = "/".join(["q" * 120] * 3) + "/pax"  # too long for ustar: a PAX header

# (id, members, outcome as a base layer, outcome as an ADD archive into /d/)
ATTACKS = [
    ("dotdot", [(UP + "CANARY/pwned", REG, b"out")],
     refused("leads outside the root"), refused("climbs out of the destination")),
    ("absolute", [("CANARY/abs", REG, b"abs")],
     contained("cat CANARY/abs", "abs"), contained("cat /d/CANARY/abs", "abs")),
    ("symlink-then-write", [("evil", SYM, "CANARY"), ("evil/pwned", REG, b"in")],
     contained("cat CANARY/pwned", "in"), contained("cat /d/evil/pwned CANARY/pwned", "inin")),
    ("symlink-dotdot-then-write", [("evil", SYM, UP + "CANARY"), ("evil/pwned", REG, b"in")],
     contained("cat CANARY/pwned", "in"), contained("cat CANARY/pwned", "in")),
    ("hardlink-absolute", [("h", LNK, "CANARY/keep")],
     refused("hardlink target .* is not in the root"),
     refused("hardlink to .*, which is not an earlier file")),
    ("hardlink-dotdot", [("h", LNK, UP + "CANARY/keep")],
     refused("leads outside the root"), refused("climbs out of the destination")),
    ("hardlink-through-symlink", [("evil", SYM, "CANARY"), ("h", LNK, "evil/keep")],
     refused("is not in the root"), refused("which is not an earlier file")),
    ("component-over-255", [("d/" + LONG_COMPONENT, REG, b"long")],
     refused("File name too long"), refused("File name too long")),
    ("path-over-4096", [(LONG_PATH, REG, b"deep")],
     refused("File name too long"), refused("File name too long|a path is too long for this system")),
    ("pax-long-name", [(PAX_NAME, REG, b"pax")],
     contained(f"cat /{PAX_NAME}", "pax"), contained(f"cat /d/{PAX_NAME}", "pax")),
    ("duplicates", [("f", REG, b"first"), ("f", REG, b"second"), ("g", DIR), ("g", REG, b"file"),
                    ("s", SYM, "CANARY"), ("s", REG, b"not-through")],
     contained("cat f g s", "secondfilenot-through"),
     contained("cat /d/f /d/g /d/s", "secondfilenot-through")),
    ("whiteout-dotdot", [(UP + "CANARY/.wh.keep", REG)],
     refused("leads outside the root"), refused("climbs out of the destination")),
    ("whiteout-through-symlink", [("evil", SYM, "CANARY"), ("evil/.wh.keep", REG)],
     contained("readlink evil", "CANARY"), refused("names starting with '.wh.' are whiteouts")),
    ("opaque-through-symlink", [("evil", SYM, "CANARY"), ("evil/.wh..wh..opq", REG)],
     contained("readlink evil", "CANARY"), refused("names starting with '.wh.' are whiteouts")),
]


def _members(members: list[tuple], canary: Path) -> io.BytesIO:
    return tar_of(*(tuple(v.replace(CANARY, str(canary)) if isinstance(v, str) else v
                          for v in member) for member in members))


def _clean_failure(result, pattern: str) -> None:
    assert result.returncode != 0, result.stderr
    assert re.search(pattern, result.stderr), result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, \
        result.stderr


class BaseArchive:
    """Writes docker-save archives of busybox:test plus layers of our choosing, one image per
    tag: the hostile layer on top of a base a RUN can use."""

    def __init__(self, busybox_tar: Path) -> None:
        with tarfile.open(busybox_tar) as archive:
            item = json.load(archive.extractfile("manifest.json"))[0]
            self.config = json.load(archive.extractfile(item["Config"]))
            self.base_layer = archive.extractfile(item["Layers"][0]).read()

    def write(self, path: Path, images: dict[str, tuple[bytes, str | None]]) -> None:
        """`images`: tag -> (layer file as stored, its diff ID or None to compute it)."""
        files = {"base/layer.tar": self.base_layer}
        base_diff = "sha256:" + hashlib.sha256(self.base_layer).hexdigest()
        manifest = []
        for number, (tag, (layer, diff_id)) in enumerate(images.items()):
            diff_id = diff_id or "sha256:" + hashlib.sha256(
                zlib.decompress(layer, 31) if layer[:2] == b"\x1f\x8b" else layer).hexdigest()
            config = dict(self.config, rootfs={"type": "layers", "diff_ids": [base_diff, diff_id]},
                          history=[{"created": "1970-01-01T00:00:00Z"}] * 2)
            config_bytes = json.dumps(config).encode()
            config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
            files[config_name] = config_bytes
            files[f"layer{number}/layer.tar"] = layer
            manifest.append({"Config": config_name, "RepoTags": [tag],
                             "Layers": ["base/layer.tar", f"layer{number}/layer.tar"]})
        files["manifest.json"] = json.dumps(manifest).encode()
        with tarfile.open(path, "w") as out:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                out.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    """One cache (busybox:test and every hostile base image loaded once) and one canary
    directory for the module; each test checks the canary after it."""
    top = tmp_path_factory.mktemp("hostile-layers")
    busybox_tar = busybox_base(top)
    canary = top / "canary"
    canary.mkdir()
    (canary / "keep").write_bytes(b"precious")
    env = {"PYBUILD_CACHE_DIR": str(top / "cache")}
    bases = BaseArchive(busybox_tar)
    bases.write(top / "attacks.tar", {f"hostile-{name}:test": (_members(members, canary).getvalue(),
                                                               None)
                                      for name, members, _, _ in ATTACKS})
    for archive in (busybox_tar, top / "attacks.tar"):
        loaded = pybuild("load", "-i", str(archive), env=env)
        assert loaded.returncode == 0, loaded.stderr
    return top, canary, env, bases


@pytest.fixture
def hostile(place, tmp_path):
    top, canary, env, bases = place
    before = snapshot(canary)
    yield canary, env, bases, tmp_path
    assert snapshot(canary) == before
    assert sorted(p.name for p in top.iterdir()) == ["attacks.tar", "busybox.tar", "cache",
                                                     "canary"]


def _build(tmp_path: Path, env: dict, dockerfile: str, files: dict[str, bytes] | None = None):
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(dockerfile)
    for name, data in (files or {}).items():
        (context / name).write_bytes(data)
    return pybuild("--progress", "plain", "-o", str(tmp_path / "out.tar"), str(context), env=env,
                   cwd=tmp_path)


def _check(result, outcome: tuple, canary: Path) -> None:
    if outcome[0] == "refused":
        _clean_failure(result, outcome[1])
        return
    assert result.returncode == 0, result.stderr
    printed = re.search(r"^#\d+ \S+ ==>(.*)<==$", result.stderr, re.M)
    assert printed and printed.group(1) == outcome[2].replace(CANARY, str(canary)), result.stderr


def _probe(outcome: tuple, canary: Path) -> str:
    if outcome[0] == "refused":
        return "true"
    return f"echo \"==>$({outcome[1].replace(CANARY, str(canary))})<==\""


@pytest.mark.parametrize("name, members, as_base, as_add", ATTACKS, ids=[a[0] for a in ATTACKS])
def test_a_hostile_base_layer(hostile, name, members, as_base, as_add):
    canary, env, _, tmp_path = hostile
    result = _build(tmp_path, env, f"FROM hostile-{name}:test\nRUN {_probe(as_base, canary)}\n")
    _check(result, as_base, canary)
    if as_base[0] == "refused":
        assert re.search(r"Dockerfile:2: RUN: unpacking layer sha256:\w{12}: ", result.stderr)


@pytest.mark.parametrize("name, members, as_base, as_add", ATTACKS, ids=[a[0] for a in ATTACKS])
def test_a_hostile_add_archive(hostile, name, members, as_base, as_add):
    canary, env, _, tmp_path = hostile
    archive = _members(members, canary).getvalue()
    result = _build(tmp_path, env, "FROM busybox:test\nADD x.tar /d/\n"
                                   f"RUN {_probe(as_add, canary)}\n", {"x.tar": archive})
    _check(result, as_add, canary)
    if as_add[0] == "refused" and "File name too long" not in as_add[1]:
        assert "Dockerfile:2" in result.stderr, result.stderr


# -- layers refused as they are read: bad digests, damaged and bomb-like compression -------------

def _random_tar() -> bytes:
    return tar_of(("f", REG, os.urandom(200_000))).getvalue()


def _leftovers(cache: Path) -> list[str]:
    """Temp files a failed load or build left in the cache."""
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*")
                  if p.name.startswith((".tmp-", ".add-")))


def test_a_base_layer_whose_diff_id_does_not_match_is_refused(hostile):
    _, env, bases, tmp_path = hostile
    bases.write(tmp_path / "bad.tar", {"hostile-digest:test": (_random_tar(), "sha256:" + "0" * 64)})
    _clean_failure(pybuild("load", "-i", str(tmp_path / "bad.tar"), env=env),
                   "has diff ID sha256:[0-9a-f]{64}, but the image config lists sha256:0{64}")
    assert "hostile-digest" not in pybuild("images", env=env).stdout.decode()
    assert _leftovers(Path(env["PYBUILD_CACHE_DIR"])) == []


def test_a_truncated_gzip_base_layer_is_refused(hostile):
    _, env, bases, tmp_path = hostile
    layer = _random_tar()
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    bases.write(tmp_path / "cut.tar", {"hostile-cut:test": (gzip.compress(layer)[:100_000], diff_id)})
    _clean_failure(pybuild("load", "-i", str(tmp_path / "cut.tar"), env=env),
                   "layer0/layer.tar: cannot be decompressed")
    assert _leftovers(Path(env["PYBUILD_CACHE_DIR"])) == []


def test_a_truncated_gzip_add_archive_fails_naming_the_line(hostile):
    _, env, _, tmp_path = hostile
    result = _build(tmp_path, env, "FROM busybox:test\nADD x.tar.gz /d/\n",
                    {"x.tar.gz": gzip.compress(_random_tar())[:100_000]})
    _clean_failure(result, "Dockerfile:2: .*x.tar.gz")
    assert _leftovers(Path(env["PYBUILD_CACHE_DIR"])) == []


def test_a_file_that_only_looks_compressed_is_added_as_it_is(hostile):
    """Docker judges an archive by whether its start decompresses to a tar header."""
    _, env, _, tmp_path = hostile
    fake = b"\x1f\x8b" + os.urandom(1000)
    result = _build(tmp_path, env, "FROM busybox:test\nADD x.gz /d/\n"
                                   "RUN echo \"==>$(sha256sum /d/x.gz | cut -c1-64)<==\"\n",
                    {"x.gz": fake})
    _check(result, contained("", hashlib.sha256(fake).hexdigest()), Path())


# -- bombs: a small gzip that expands a thousandfold ---------------------------------------------

_ZEROS = 16 << 20


def _gzip_bomb(chunks: int) -> bytes:
    """A gzip (about 16 KB per 16 MB) of a tar holding one file of zeros, `chunks` x 16 MB in
    all. Concatenated gzip members are one stream to every reader."""
    info = tarfile.TarInfo("zeros")
    info.size = chunks * _ZEROS - 1024  # the rest is the two zero blocks that end a tar
    return gzip.compress(info.tobuf(tarfile.PAX_FORMAT)) + gzip.compress(bytes(_ZEROS)) * chunks


def _with_peak_memory(*args: str, env: dict, cwd: Path) -> tuple[int, str, int]:
    """Run the CLI; its status, stderr and peak resident memory in MB."""
    measure = ("import resource, subprocess, sys; status = subprocess.run(sys.argv[1:]).returncode;"
               " print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr);"
               " sys.exit(status)")
    process = subprocess.run([sys.executable, "-c", measure, sys.executable, "-m", "builder.cli",
                              *args], env=dict(os.environ, **env), cwd=cwd, capture_output=True,
                             timeout=300)
    *lines, peak = process.stderr.decode().splitlines()
    return process.returncode, "\n".join(lines), int(peak) // 1024


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MB tmpfs for the cache: a bomb fills it quickly."""
    require(os.geteuid() == 0, "root, to mount a tmpfs")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "pybuild-test", str(disk)],
                   check=True)
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


def test_a_bomb_base_layer_streams_to_disk_and_fails_cleanly_when_it_is_full(hostile, small_disk):
    _, _, bases, tmp_path = hostile
    bases.write(tmp_path / "bomb.tar", {"bomb:test": (_gzip_bomb(4), "sha256:" + "0" * 64)})
    env = {"PYBUILD_CACHE_DIR": str(small_disk / "cache")}
    _clean_failure(pybuild("load", "-i", str(tmp_path / "bomb.tar"), env=env),
                   "No space left on device")
    assert _leftovers(small_disk / "cache") == []


def test_a_bomb_add_archive_streams_to_disk_and_fails_cleanly_when_it_is_full(hostile, small_disk):
    _, _, _, tmp_path = hostile
    (tmp_path / "context").mkdir()
    (tmp_path / "context" / "Dockerfile").write_text("FROM scratch\nADD bomb.tar.gz /d/\n")
    (tmp_path / "context" / "bomb.tar.gz").write_bytes(_gzip_bomb(4))
    env = {"PYBUILD_CACHE_DIR": str(small_disk / "cache")}
    _clean_failure(pybuild("-o", str(tmp_path / "out.tar"), str(tmp_path / "context"), env=env),
                   "Dockerfile:2: ADD: No space left on device")
    assert _leftovers(small_disk / "cache") == []


def test_a_bomb_that_fits_is_added_in_bounded_memory(hostile):
    _, _, _, tmp_path = hostile
    (tmp_path / "context").mkdir()
    (tmp_path / "context" / "Dockerfile").write_text("FROM scratch\nADD bomb.tar.gz /d/\n")
    (tmp_path / "context" / "bomb.tar.gz").write_bytes(_gzip_bomb(8))  # 128 MB
    env = {"PYBUILD_CACHE_DIR": str(tmp_path / "cache")}
    status, stderr, peak = _with_peak_memory("-o", str(tmp_path / "out.tar"),
                                             str(tmp_path / "context"), env=env, cwd=tmp_path)
    assert status == 0, stderr
    assert peak < 100, f"{peak} MB"  # 52 MB measured; it would be 160 MB if the file were held
