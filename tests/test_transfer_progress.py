"""Transfer progress: pulls and exports report their bytes, and the log passes on a few reports a
second, never one per chunk."""
from __future__ import annotations

import io
import json
from pathlib import Path

from builder.api import BuildRequest, build
from builder.progress.sinks import JsonSink, Log
from layers.archive import ArchiveImage, write_archive
from layers.layerblob import stored_blob
from layers.blobstore import BlobStore
from layers.compression import Compression
from layers.platform import Platform
from layers.reference import Reference
from layers.registry.pull import pull_layers, resolve
from layers.registry.push import push_image
from tests.registry_support import (  # noqa: F401 (fixtures)
    make_image,
    registry,
    session,
    unique_repository,
)


def _events(stream: io.StringIO, kind: str) -> list[dict]:
    """The events of one kind a JsonSink wrote."""
    return [event for event in map(json.loads, stream.getvalue().splitlines())
            if event["event"] == kind]


def test_the_log_passes_on_a_few_reports_a_second_and_the_last() -> None:
    stream = io.StringIO()
    log = Log(JsonSink(stream))
    for done in range(0, 100_001, 10):
        log.progress(7, done, 100_000)
    log.progress(8, 1, None)
    reports = [(e["number"], e["done"], e["total"]) for e in _events(stream, "StepProgress")]
    assert 3 <= len(reports) < 50
    assert reports[0] == (7, 0, 100_000)
    assert reports[-2:] == [(7, 100_000, 100_000), (8, 1, None)]


def test_an_export_reports_the_layer_bytes_written(tmp_path: Path) -> None:
    paths = []
    for name, size in (("a", 40 << 20), ("b", 1000)):
        path = tmp_path / name
        with open(path, "wb") as handle:
            handle.truncate(size)
        paths.append(stored_blob(str(path), f"sha256:{name * 64}", Compression.NONE.media_type))
    reports: list[tuple[int, int]] = []
    with open(tmp_path / "out.tar", "wb") as out:
        write_archive(out, ArchiveImage(b"{}", (paths[0], paths[1], paths[0]), ()),
                      lambda done, total: reports.append((done, total)))
    total = (40 << 20) + 1000  # the repeated layer is written once
    assert len(reports) >= 3 and reports[-1] == (total, total)
    assert [done for done, _ in reports] == sorted(done for done, _ in reports)


def test_a_build_reports_its_export_as_step_progress(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a\n")
    stream = io.StringIO()
    result = build(BuildRequest(context=str(tmp_path), output=str(tmp_path / "out.tar"),
                                dockerfile_text="FROM scratch\nCOPY a.txt /\n",
                                cache_dir=str(tmp_path / "cache")), JsonSink(stream))
    export = next(e["number"] for e in _events(stream, "StepStarted")
                  if e["title"].startswith("exporting to"))
    reports = _events(stream, "StepProgress")
    assert reports and {e["number"] for e in reports} == {export}
    assert reports[-1]["done"] == reports[-1]["total"] == result.size


def test_a_pull_reports_the_bytes_read_of_the_layers_it_downloads(registry, tmp_path) -> None:
    image = make_image(tmp_path / "image", (Compression.GZIP, Compression.NONE))
    client = session(registry.address)
    ref = Reference(registry.address, unique_repository(), "1")
    push_image(client, ref, image.config, image.layers)
    resolved = resolve(client, ref, Platform("linux", "amd64"))
    reports: list[tuple[int, int]] = []
    pull_layers(client, ref, resolved, BlobStore(str(tmp_path / "store")),
                progress=lambda done, total: reports.append((done, total)))
    total = sum(layer.size for layer in resolved.layers)
    assert reports[-1] == (total, total)
    assert [done for done, _ in reports] == sorted(done for done, _ in reports)
