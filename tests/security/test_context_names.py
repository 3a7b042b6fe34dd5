"""Context files whose names are not UTF-8 (Linux names are bytes): built end to end, written into
the layer with the very bytes Docker writes, rebuilt from the cache, named in the log without
breaking it, and carried through an exported cache."""
from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest

from builder.progress.sinks import shown
from tests.support import DockerImages, busybox_base, docker, docker_available, pybuild, require

# Names as bytes: Latin-1 é, bytes that are never UTF-8 in a directory name, and a real UTF-8 é
# (a different name from the Latin-1 one, which must stay so).
FILES = {b"caf\xe9.txt": b"latin-1 name\n", b"d\xff\xfe/inner \xe9.txt": b"inner\n",
         "ok-\u00e9.txt".encode(): b"utf-8 name\n", b"ign\xe9.log": b"ignored\n",
         # byte order (Docker's) and code point order (Python's) disagree on these two
         b"z\xff": b"", "z\ue000".encode(): b""}
COPIED = {b"app/", b"app/Dockerfile", b"app/.dockerignore", b"app/caf\xe9.txt", b"app/d\xff\xfe/",
          b"app/d\xff\xfe/inner \xe9.txt", "app/ok-\u00e9.txt".encode(), b"app/z\xff",
          "app/z\ue000".encode()}


def make_context(directory: Path, dockerfile: str) -> Path:
    directory.mkdir()
    for name, data in FILES.items():
        path = os.path.join(os.fsencode(directory), name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(data)
    (directory / ".dockerignore").write_bytes(b"ign\xe9*\n")
    (directory / "Dockerfile").write_text(dockerfile)
    return directory


def entry_names(layer: bytes) -> list[bytes]:
    """The names of a tar's entries as raw bytes: a PAX `path` record when there is one (its
    bytes as written, whatever `hdrcharset` says), else the ustar prefix and name."""
    names, offset, pax_path = [], 0, None
    while offset + 512 <= len(layer) and layer[offset:offset + 512] != bytes(512):
        header = layer[offset:offset + 512]
        size = int(header[124:136].strip(b"\0 ") or b"0", 8)
        body = layer[offset + 512:offset + 512 + size]
        kind = header[156:157]
        if kind == b"x":
            for record in body.split(b"\n"):
                if b" path=" in record:
                    pax_path = record.split(b" path=", 1)[1]
        elif kind != b"g":
            prefix, name = header[345:500].rstrip(b"\0"), header[:100].rstrip(b"\0")
            names.append(pax_path or (prefix + b"/" + name if prefix else name))
            pax_path = None
        offset += 512 + (size + 511) // 512 * 512
    return names


def layers_of(tarball: Path) -> list[bytes]:
    with tarfile.open(tarball) as archive:
        manifest = json.load(archive.extractfile("manifest.json"))[0]
        return [archive.extractfile(name).read() for name in manifest["Layers"]]


@pytest.fixture
def context(tmp_path: Path) -> Path:
    return make_context(tmp_path / "ctx", "FROM scratch\nCOPY . /app/\n")


def build(context: Path, cache: Path, *args: str):
    result = pybuild("--progress", "plain", *args, str(context),
                     env={"PYBUILD_CACHE_DIR": str(cache)})
    assert result.returncode == 0, result.stderr
    return result


def test_the_layer_names_the_files_with_the_bytes_docker_writes(context, tmp_path):
    out = tmp_path / "image.tar"
    build(context, tmp_path / "cache", "-o", str(out))
    (layer,) = layers_of(out)
    assert set(entry_names(layer)) == COPIED
    require(docker_available(), "a running Docker engine")
    images = DockerImages()
    try:
        name = images.name("pybuild-names")
        docker("build", "--network", "none", "-t", name, str(context))
        saved = tmp_path / "docker.tar"
        docker("save", "-o", str(saved), name)
        (docker_layer,) = layers_of(saved)
    finally:
        images.cleanup()
    assert entry_names(layer) == entry_names(docker_layer)


def test_a_rebuild_hits_and_a_changed_file_is_named_in_its_bytes(context, tmp_path):
    cache = tmp_path / "cache"
    build(context, cache, "-o", str(tmp_path / "1.tar"))
    assert "#2 CACHED" in build(context, cache, "-o", str(tmp_path / "2.tar")).stderr
    (context / os.fsdecode(b"caf\xe9.txt")).write_bytes(b"changed\n")
    assert "#2 not cached: caf\\xe9.txt changed" in build(
        context, cache, "-o", str(tmp_path / "3.tar")).stderr
    (context / os.fsdecode(b"caf\xe9.txt")).write_bytes(b"again\n")
    logged = pybuild("--progress", "json", "-o", str(tmp_path / "4.tar"), str(context),
                     env={"PYBUILD_CACHE_DIR": str(cache), "PYTHONIOENCODING": "utf-8:strict"})
    assert logged.returncode == 0, logged.stderr
    events = [json.loads(line) for line in logged.stderr.splitlines() if line.startswith("{")]
    assert {"caf\\xe9.txt changed"} <= {e.get("reason") for e in events}


def test_an_exported_cache_carries_the_names(context, tmp_path):
    exported = tmp_path / "exported"
    first, second = tmp_path / "first.iid", tmp_path / "second.iid"
    build(context, tmp_path / "cache", "-o", str(tmp_path / "1.tar"), "--iidfile", str(first),
          "--cache-to", f"type=local,dest={exported}")
    imported = build(context, tmp_path / "fresh", "-o", str(tmp_path / "2.tar"), "--iidfile",
                     str(second), "--cache-from", f"type=local,src={exported}")
    assert "#3 CACHED" in imported.stderr and first.read_text() == second.read_text()
    (context / os.fsdecode(b"d\xff\xfe/inner \xe9.txt")).write_bytes(b"changed\n")
    missed = build(context, tmp_path / "fresher", "-o", str(tmp_path / "3.tar"),
                   "--cache-from", f"type=local,src={exported}")
    assert "not cached: d\\xff\\xfe/inner \\xe9.txt changed" in missed.stderr


def test_a_run_sees_the_names_and_its_own_reach_its_layer(tmp_path):
    base = busybox_base(tmp_path)
    cache = tmp_path / "cache"
    assert pybuild("load", "-i", str(base), env={"PYBUILD_CACHE_DIR": str(cache)}).returncode == 0
    context = make_context(tmp_path / "ctx", "FROM busybox:test\nCOPY . /app/\n"
                           "RUN test -f \"/app/caf$(printf '\\351').txt\" && "
                           "touch \"/app/run-$(printf '\\351')\"\n")
    out = tmp_path / "image.tar"
    build(context, cache, "-o", str(out))
    assert entry_names(layers_of(out)[-1]) == [b"app/", b"app/run-\xe9"]
    assert "#3 CACHED" in build(context, cache, "-o", str(out)).stderr


def test_a_latin_1_dockerfile_names_such_files_and_parse_prints_valid_json(context, tmp_path):
    (context / "Dockerfile").write_bytes(b"FROM scratch\nCOPY caf\xe9.txt /d\xe9st/\n")
    out = tmp_path / "image.tar"
    build(context, tmp_path / "cache", "-o", str(out))
    assert entry_names(layers_of(out)[-1]) == [b"d\xe9st/", b"d\xe9st/caf\xe9.txt"]
    parsed = pybuild("parse", "-f", str(context / "Dockerfile"),
                     env={"PYTHONIOENCODING": "utf-8:strict"})
    assert parsed.returncode == 0, parsed.stderr
    copy = json.loads(parsed.stdout)["instructions"][1]
    assert os.fsencode(copy["original"]) == b"COPY caf\xe9.txt /d\xe9st/"


@pytest.mark.parametrize("text, expected", [
    ("src/app.py changed", "src/app.py changed"),
    ("caf\u00e9.txt", "caf\u00e9.txt"),  # UTF-8 is shown as it is
    (os.fsdecode(b"caf\xe9.txt"), "caf\\xe9.txt"),  # a byte that is not UTF-8 as \xNN
    (os.fsdecode(b"d\xff\xfe/\xc3\xa9"), "d\\xff\\xfe/\u00e9"),
    ("\ud800 from a JSON escape", "\\ud800 from a JSON escape"),  # no name makes this one
])
def test_the_log_shows_any_name_as_text_every_stream_can_write(text, expected):
    assert shown(text) == expected
    assert shown(text).encode("utf-8")  # strict: what any UTF-8 stream writes
