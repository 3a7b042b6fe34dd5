"""The `-o` tarball begun while the build runs (builder/output/earlytar.py): the same bytes as one
written at the end, and nothing placed when the build fails after it began."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from builder.output.earlytar import EarlyTarball
from builder.output.tarball import layer_blobs, write_output
from layers.archive import ArchiveImage
from layers.blobstore import BlobStore
from layers.compression import Compression
from layers.image import parse_config
from layers.reference import parse_reference
from tests.sample_images import make_image
from tests.support import busybox_base, pybuild


@pytest.fixture
def image(tmp_path: Path) -> tuple[BlobStore, ArchiveImage]:
    blobs = BlobStore(str(tmp_path / "blobs"))
    config = make_image(blobs, {"etc/base": b"base\n" * 1000}, {"app/one": os.urandom(70_000)},
                        {"app/two": b"two\n"})
    layers = layer_blobs(blobs, parse_config(config), Compression.NONE)
    return blobs, ArchiveImage(config, layers, (parse_reference("app:1"),))


@pytest.mark.parametrize("offered", [
    pytest.param(lambda ids: [ids[:1], ids[:2]], id="layers-as-the-stage-makes-them"),
    pytest.param(lambda ids: [ids], id="every-layer"),
    pytest.param(lambda ids: [ids[1:]], id="not-the-image-beginning"),
    pytest.param(lambda ids: [], id="nothing")])
def test_a_tarball_begun_early_has_the_bytes_of_one_written_at_the_end(tmp_path: Path, image,
                                                                       offered) -> None:
    blobs, archive = image
    diff_ids = tuple(layer.digest for layer in archive.layers)
    plain, early_path = tmp_path / "plain.tar", tmp_path / "early.tar"
    plain_digest = write_output(str(plain), archive)
    early = EarlyTarball(str(early_path), blobs)
    for layers in offered(diff_ids):
        early.offer(layers)
    assert not early_path.exists(), "the file has no name before the export"
    assert write_output(str(early_path), archive, early=early) == plain_digest
    assert early_path.read_bytes() == plain.read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["blobs", "early.tar", "plain.tar"]


def test_an_image_holding_a_layer_twice_is_finished_from_its_early_file(tmp_path: Path) -> None:
    blobs = BlobStore(str(tmp_path / "blobs"))
    same = {"etc/same": b"same\n"}
    config = make_image(blobs, same, same, {"app/one": b"one\n"})
    archive = ArchiveImage(config, layer_blobs(blobs, parse_config(config), Compression.NONE), ())
    diff_ids = tuple(layer.digest for layer in archive.layers)
    assert diff_ids[0] == diff_ids[1]
    found: list[bool] = []

    class Watched(EarlyTarball):
        @contextlib.contextmanager
        def taken(self, digests):
            with super().taken(digests) as begun:
                found.append(begun is not None)
                yield begun
    early = Watched(str(tmp_path / "early.tar"), blobs)
    early.offer(diff_ids)
    write_output(str(tmp_path / "early.tar"), archive, early=early)
    write_output(str(tmp_path / "plain.tar"), archive)
    assert found == [True], "the file begun early fits: each blob is in it once"
    assert (tmp_path / "early.tar").read_bytes() == (tmp_path / "plain.tar").read_bytes()


def test_the_head_holds_what_was_offered(tmp_path: Path, image) -> None:
    blobs, archive = image
    diff_ids = [layer.digest for layer in archive.layers]
    early = EarlyTarball(str(tmp_path / "out.tar"), blobs)
    early.offer(tuple(diff_ids[:2]))
    early.offer(tuple(diff_ids[1:]))  # not a continuation of what was offered: ignored
    with early.taken(diff_ids) as begun:
        assert begun is not None and list(begun[1].written) == diff_ids[:2]
    assert (tmp_path / "out.tar").stat().st_size > 70_000, "taken, finished or not, it is placed"
    with early.taken(diff_ids) as again:
        assert again is None, "taken once"


def test_a_build_that_fails_after_its_export_began_leaves_the_old_output(tmp_path: Path) -> None:
    base = busybox_base(tmp_path)
    env = {"PYBUILD_CACHE_DIR": str(tmp_path / "cache")}
    assert pybuild("load", "-i", str(base), env=env).returncode == 0
    context, outputs = tmp_path / "context", tmp_path / "outputs"
    context.mkdir()
    outputs.mkdir()
    out = outputs / "image.tar"
    out.write_bytes(b"the previous build's image")
    (context / "Dockerfile").write_text(
        "FROM busybox:test\nRUN head -c 3000000 /dev/urandom > /big\nRUN echo two > /two\n"
        "RUN exit 3\n")
    result = pybuild("-o", str(out), str(context), env=env)
    assert result.returncode == 1, result.stderr
    assert out.read_bytes() == b"the previous build's image"
    assert os.listdir(outputs) == ["image.tar"], "no temp file left beside it"

    (context / "Dockerfile").write_text(
        "FROM busybox:test\nRUN head -c 3000000 /dev/urandom > /big\nRUN echo two > /two\n")
    result = pybuild("-o", str(out), str(context), env=env)
    assert result.returncode == 0, result.stderr
    streamed = pybuild("-o", "-", str(context), env=env)  # cached, and written at the end
    assert streamed.returncode == 0, streamed.stderr
    assert out.read_bytes() == streamed.stdout
    assert os.listdir(outputs) == ["image.tar"]


def loaded_base(tmp_path: Path) -> Path:
    """A cache in `tmp_path` holding busybox:test."""
    cache = tmp_path / "cache"
    base = busybox_base(tmp_path)
    assert pybuild("load", "-i", str(base), env={"PYBUILD_CACHE_DIR": str(cache)}).returncode == 0
    return cache


@pytest.fixture
def offers(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many layers each EarlyTarball.offer of the test's builds named."""
    offered: list[int] = []
    offer = EarlyTarball.offer

    def recorded(self, diff_ids):
        offered.append(len(diff_ids))
        return offer(self, diff_ids)
    monkeypatch.setattr(EarlyTarball, "offer", recorded)
    return offered


def test_the_base_is_offered_when_the_first_step_misses(tmp_path: Path,
                                                        offers: list[int]) -> None:
    """The base's layers start to be copied while the first step that missed runs (not after
    it made its layer), and a no-op rebuild offers nothing."""
    import io

    from builder.api import BuildRequest, build
    from builder.progress.sinks import JsonSink
    from grammar.errors import DockerfileError
    cache = loaded_base(tmp_path)

    def built(dockerfile: str) -> None:
        build(BuildRequest(context=str(tmp_path), output=str(tmp_path / "image.tar"),
                           dockerfile_text=dockerfile, cache_dir=str(cache)),
              JsonSink(io.StringIO()))

    with pytest.raises(DockerfileError):
        built("FROM busybox:test\nRUN exit 3\n")  # a miss that makes no layer
    assert offers == [1], "the base's one layer, offered at the miss"
    offers.clear()
    built("FROM busybox:test\nRUN echo one > /one\n")
    assert offers == [1, 2], "the base at the miss, then with the RUN's layer"
    offers.clear()
    built("FROM busybox:test\nRUN echo one > /one\n")
    assert offers == [], "a no-op rebuild begins no tarball"


@pytest.mark.parametrize("kind", ["docker", "oci"])
def test_an_archive_output_of_buildx_syntax_is_begun_early_too(
        tmp_path: Path, kind: str, offers: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    """-o type=docker|oci,dest=FILE gets the early file as -o FILE does: begun at the first
    miss, and the same bytes as the archive a rebuild writes at the end."""
    import io

    from builder.api import BuildRequest, build
    from builder.output import tarball
    from builder.output.spec import parse_output
    from builder.progress.sinks import JsonSink
    cache = loaded_base(tmp_path)
    finished: list[bool] = []
    write_archive = tarball.write_archive

    def recorded_archive(out, image, progress=None, **options):
        finished.append(options.get("head") is not None)
        return write_archive(out, image, progress, **options)
    monkeypatch.setattr(tarball, "write_archive", recorded_archive)

    def built(dest: Path) -> None:
        build(BuildRequest(context=str(tmp_path), output=None, cache_dir=str(cache),
                           exports=(parse_output(f"type={kind},dest={dest}"),),
                           dockerfile_text="FROM busybox:test\nRUN head -c 300000 /dev/urandom"
                                           " > /big\nRUN echo two > /two\n"),
              JsonSink(io.StringIO()))

    built(tmp_path / "early.tar")
    assert offers == [1, 2, 2, 3], "the base at the first miss, then the layers so far"
    assert finished == [True], "finished from the file begun early"
    offers.clear()
    finished.clear()
    built(tmp_path / "late.tar")
    assert offers == [] and finished == [False], "a cached rebuild writes it at the end"
    assert (tmp_path / "early.tar").read_bytes() == (tmp_path / "late.tar").read_bytes()
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["busybox.tar", "cache", "early.tar", "late.tar"]), "no temp file left"
