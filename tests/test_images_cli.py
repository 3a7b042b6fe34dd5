"""`pybuild load`, `pybuild images`, `pybuild rmi`: output, exit status, and a store that a bad
archive leaves as it was."""
from __future__ import annotations

import gzip
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from builder.cli.images import images_command, load_command, rmi_command
from builder.units import human_size
from layers.blobstore import BlobStore
from layers.compression import Compression
from layers.image import chain_ids, sha256_digest
from layers.imagestore import ImageStore
from layers.snapshots import SnapshotStore
from tests.sample_images import make_image, write_tarball
from tests.support import (ROOT, DockerImages, busybox_base, docker, docker_available,
                           require)
from tests.test_trace import tracks


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def sample(tmp_path: Path) -> tuple[BlobStore, bytes]:
    source = BlobStore(str(tmp_path / "source"))
    return source, make_image(source, {"etc/hello": b"hello\n"}, {"bin/tool": b"x" * 5000})


def run(command, cache: Path, *args: str, capsys) -> tuple[int, str, str]:
    status = command(["--cache-dir", str(cache), *args])
    out, err = capsys.readouterr()
    return status, out, err


def test_load_then_images_then_rmi(tmp_path: Path, cache: Path, sample, capsys) -> None:
    source, config = sample
    archive = tmp_path / "app.tar"
    write_tarball(archive, source, config, ("app:1", "registry.example:5000/team/app:2"),
                  Compression.GZIP)
    status, out, _ = run(load_command, cache, "-q", "-i", str(archive), capsys=capsys)
    assert (status, out) == (0, "")
    snapshots = SnapshotStore(str(cache))
    top = snapshots.path(chain_ids(tuple(json.loads(config)["rootfs"]["diff_ids"]))[-1])
    assert Path(top, "bin/tool").read_bytes() == b"x" * 5000, "unpacked as it was loaded"

    status, out, _ = run(images_command, cache, capsys=capsys)
    short_id = sha256_digest(config)[7:19]
    lines = out.splitlines()
    assert status == 0
    assert re.split(r"\s{2,}", lines[0]) == ["REPOSITORY", "TAG", "IMAGE ID", "SIZE"]
    rows = [re.split(r"\s{2,}", line) for line in lines[1:]]
    assert [row[:3] for row in rows] == [["app", "1", short_id],
                                         ["registry.example:5000/team/app", "2", short_id]]
    assert rows[0][3] == human_size(sum(Path(source.path(d)).stat().st_size
                                        for d in json.loads(config)["rootfs"]["diff_ids"]), 3)
    assert lines[0].index("TAG") == lines[1].index("1"), "columns are aligned"

    status, out, _ = run(rmi_command, cache, "app:1", capsys=capsys)
    assert (status, out) == (0, "Untagged: app:1\n")
    status, out, _ = run(rmi_command, cache, short_id[:6], capsys=capsys)
    assert (status, out) == (0, "Untagged: registry.example:5000/team/app:2\n"
                                f"Deleted: {sha256_digest(config)}\n")
    status, out, err = run(rmi_command, cache, "app:1", capsys=capsys)
    assert (status, err) == (1, "ERROR: no such image: app:1\n")
    assert run(images_command, cache, capsys=capsys)[1].splitlines()[1:] == []


@pytest.mark.parametrize("options, log", [
    ((), "plain"), (("--progress", "plain"), "plain"), (("--progress", "json"), "json"),
    (("--progress", "quiet"), ""), (("-q",), ""), (("-q", "--progress", "plain"), "")])
def test_load_logs_each_layer_it_reads_as_a_step(tmp_path: Path, cache: Path, sample, capsys,
                                                 options, log) -> None:
    source, config = sample
    archive = tmp_path / "app.tar"
    write_tarball(archive, source, config, ("app:1",), Compression.GZIP)
    diff_ids = json.loads(config)["rootfs"]["diff_ids"]
    status, out, err = run(load_command, cache, *options, "-i", str(archive), capsys=capsys)
    assert (status, out) == (0, "" if "-q" in options else "Loaded image: app:1\n")
    if log == "plain":  # the two layers are read at the same time: their lines interleave
        steps = {}
        for line in err.splitlines():
            number, text = re.fullmatch(r"#(\d+) (.*)", line).groups()
            steps.setdefault(number, []).append(re.sub(r"[\d.]+s$", "Ts", text))
        assert sorted(steps.values()) == sorted(
            [f"loading layer {diff_id[:19]}", "2 entries, 0.0MB in Ts", "DONE Ts"]
            for diff_id in diff_ids)
    elif log == "json":
        events = [json.loads(line) for line in err.splitlines()]
        assert sorted(e["title"] for e in events if e["event"] == "StepStarted") == \
            sorted(f"loading layer {diff_id[:19]}" for diff_id in diff_ids)
        finals = {e["number"]: e for e in events if e["event"] == "StepProgress"}
        assert [e["files"] for e in finals.values()] == [2, 2]
        assert all(e["done"] == e["total"] for e in finals.values()), "each bar reaches its end"
        assert sum(e["event"] == "StepDone" for e in events) == 2
    else:
        assert err == ""
    status, out, err = run(load_command, cache, *options, "-i", str(archive), capsys=capsys)
    assert (status, err) == (0, ""), "layers the store has are not read: no steps"


def test_the_trace_of_a_load_has_a_span_per_layer_on_the_unpacks_track(tmp_path: Path,
                                                                        cache: Path) -> None:
    archive = busybox_base(tmp_path)
    trace = tmp_path / "load.json"
    status = load_command(["--cache-dir", str(cache), "-q", "--trace", str(trace),
                           "-i", str(archive)])
    assert status == 0
    timeline = tracks(trace, top="load")
    spans = [e for track in timeline.values() for e in track if e["cat"] == "unpacks"]
    (image,) = ImageStore(str(cache)).list()
    assert sorted(e["name"] for e in spans) == \
        sorted(f"loading layer {diff_id[:19]}" for diff_id in image.diff_ids)
    for span in spans:
        entries = int(re.fullmatch(r"([\d,]+) entries, [\d.]+MB in [\d.]+s",
                                   span["args"]["info"][0])[1].replace(",", ""))
        assert entries > 100, "busybox's files, unpacked as they were read"
    assert timeline["load"][0]["args"] == {"steps": len(spans)}
    assert load_command(["--cache-dir", str(cache), "--trace", str(tmp_path / "no/t.json"),
                         "-i", str(archive)]) == 2


def test_an_untagged_image_and_loading_twice(tmp_path: Path, cache: Path, sample, capsys) -> None:
    source, config = sample
    archive = tmp_path / "untagged.tar"
    write_tarball(archive, source, config)
    for _ in range(2):
        status, out, _ = run(load_command, cache, "-i", str(archive), capsys=capsys)
        assert (status, out) == (0, f"Loaded image ID: {sha256_digest(config)}\n")
    status, out, _ = run(images_command, cache, "-q", capsys=capsys)
    assert out == sha256_digest(config)[7:19] + "\n"
    status, out, _ = run(images_command, cache, capsys=capsys)
    assert re.split(r"\s{2,}", out.splitlines()[1])[:2] == ["<none>", "<none>"]
    status, out, _ = run(rmi_command, cache, sha256_digest(config), capsys=capsys)
    assert out == f"Deleted: {sha256_digest(config)}\n"


def test_a_bad_archive_fails_cleanly_and_changes_nothing(tmp_path: Path, cache: Path, sample,
                                                         capsys) -> None:
    source, config = sample
    good = tmp_path / "good.tar"
    write_tarball(good, source, config, ("app:1",))
    assert run(load_command, cache, "-i", str(good), capsys=capsys)[0] == 0
    index = (cache / "images/index.json").read_bytes()
    listing = run(images_command, cache, capsys=capsys)[1]

    other = make_image(source, {"etc/other": b"other content\n" * 100}, cmd="other")
    bad = tmp_path / "bad.tar"
    write_tarball(bad, source, other, ("app:1", "app:2"))
    data = bytearray(bad.read_bytes())
    position = data.index(b"other content")
    data[position] ^= 0x20
    bad.write_bytes(bytes(data))
    status, out, err = run(load_command, cache, "-i", str(bad), capsys=capsys)
    assert (status, out) == (1, "")
    assert re.fullmatch(r"#1 loading layer sha256:\w{12}\n#1 ERROR [\d.]+s\nERROR: .*diff ID.*\n",
                        err), err
    assert (cache / "images/index.json").read_bytes() == index
    assert run(images_command, cache, capsys=capsys)[1] == listing
    status, out, err = run(load_command, cache, "--progress", "json", "-i", str(bad),
                           capsys=capsys)
    events = [json.loads(line) for line in err.splitlines()]
    assert (status, out) == (1, "")
    kinds = [e["event"] for e in events if e["event"] != "StepProgress"]
    assert kinds == ["StepStarted", "StepFailed", "LoadFailed"], events
    assert "diff ID" in events[-1]["error"], "every line of the JSON log is an event"

    for args, message in ((["-i", str(tmp_path / "missing.tar")], "No such file or directory"),
                          (["-i", str(Path(__file__))], "not a tar archive")):
        status, out, err = run(load_command, cache, *args, capsys=capsys)
        assert status == 1 and message in err and err.count("\n") == 1
    assert (cache / "images/index.json").read_bytes() == index


def test_load_reads_a_compressed_archive_from_stdin(tmp_path: Path, cache: Path, sample) -> None:
    source, config = sample
    archive = tmp_path / "app.tar"
    write_tarball(archive, source, config, ("app:stdin",))
    process = subprocess.run(
        [sys.executable, "-c", "import sys; from builder.cli.images import load_command; "
                               "sys.exit(load_command(sys.argv[1:]))", "--cache-dir", str(cache)],
        input=gzip.compress(archive.read_bytes()), capture_output=True, cwd=ROOT, timeout=60)
    assert process.returncode == 0, process.stderr
    assert process.stdout == b"Loaded image: app:stdin\n"


def test_a_real_docker_save_loads_with_dockers_image_id(tmp_path: Path, cache: Path,
                                                        capsys) -> None:
    require(docker_available(), "a running Docker engine")
    images = DockerImages()
    try:
        name = images.name("pybuild-cli-load")
        rootfs = tmp_path / "rootfs.tar"
        rootfs.write_bytes(make_rootfs())
        docker("import", str(rootfs), name)
        saved = tmp_path / "saved.tar"
        docker("save", "-o", str(saved), name)
        image_id = images.inspect(name)["Id"]
    finally:
        images.cleanup()
    status, out, _ = run(load_command, cache, "-i", str(saved), capsys=capsys)
    assert (status, out) == (0, f"Loaded image: {name}\n")
    status, out, _ = run(images_command, cache, capsys=capsys)
    row = re.split(r"\s{2,}", out.splitlines()[1])
    assert row[:3] == [*name.split(":"), image_id[7:19]]


def test_an_oci_layout_with_only_a_tag_says_how_to_use_it(tmp_path: Path, cache: Path, sample,
                                                          capsys) -> None:
    require(shutil.which("skopeo") is not None, "skopeo")
    source, config = sample
    archive = tmp_path / "app.tar"
    write_tarball(archive, source, config, ("app:1",))
    layout = tmp_path / "layout"
    subprocess.run(["skopeo", "copy", "--quiet", f"docker-archive:{archive}", f"oci:{layout}:1.0"],
                   check=True, capture_output=True, timeout=300)
    status, out, err = run(load_command, cache, "-i", str(layout), capsys=capsys)
    assert status == 0 and out.startswith("Loaded image ID: sha256:")
    assert f"--build-context NAME=oci-layout://{layout}:1.0" in err


def make_rootfs() -> bytes:
    """A tar of a tiny root filesystem, as `docker import` takes it."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = 6
        tar.addfile(info, io.BytesIO(b"hello\n"))
    return out.getvalue()
