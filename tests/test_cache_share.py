"""Sharing the build cache between runners through a directory (`--cache-to type=local` /
`--cache-from type=local`): an empty runner reuses every unchanged step and fetches only the
layers the image it makes needs."""
from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from tests.support import busybox_base, pybuild
from tests.test_cache import steps

DOCKERFILE = """\
FROM busybox:test AS tools
RUN head -c 3000000 /dev/urandom > /big && echo built > /small
FROM busybox:test
COPY app.txt /app.txt
COPY --from=tools /small /small
RUN cat /app.txt /small > /both
"""


@pytest.fixture
def runner(tmp_path: Path):
    """A project, and a way to build it on a 'runner' with its own empty cache root."""
    base = busybox_base(tmp_path)
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "app.txt").write_text("app 1\n")
    (context / "Dockerfile").write_text(DOCKERFILE)

    def build(name: str, *args: str):
        cache = tmp_path / name
        env = {"PYBUILD_CACHE_DIR": str(cache), "SOURCE_DATE_EPOCH": "1700000000"}
        if not cache.exists():
            assert pybuild("load", "-q", "-i", str(base), env=env).returncode == 0
        out = tmp_path / f"{name}.tar"
        result = pybuild("--progress", "plain", "--network", "none", "-o", str(out), *args,
                         str(context), env=env)
        assert result.returncode == 0, result.stderr
        with tarfile.open(out) as archive:
            manifest = json.load(archive.extractfile("manifest.json"))[0]
            config = json.load(archive.extractfile(manifest["Config"]))
        return result.stderr, config, cache
    return context, tmp_path / "shared", build


def _has_layer(cache: Path, diff_id: str) -> bool:
    return (cache / "blobs" / "sha256" / diff_id.partition(":")[2]).exists()


def test_an_empty_runner_reuses_every_step_and_fetches_only_what_the_image_needs(runner) -> None:
    context, shared, build = runner
    log, first, _ = build("one", "--cache-to", f"type=local,dest={shared}")
    assert steps(log) == ["no earlier build"] * 4
    assert (shared / "index.json").exists() and (shared / "oci-layout").exists()

    log, second, cache = build("two", "--cache-from", f"type=local,src={shared}")
    assert steps(log) == ["CACHED"] * 4, log
    assert second == first
    # The tools stage's 3 MB layer was reused as a key, never fetched: the image does not need it.
    tools_layer = _exported_layers(shared) - set(first["rootfs"]["diff_ids"])
    assert len(tools_layer) == 1
    assert not _has_layer(cache, tools_layer.pop())
    assert all(_has_layer(cache, d) for d in first["rootfs"]["diff_ids"])

    (context / "app.txt").write_text("app 2\n")
    log, third, _ = build("three", "--cache-from", f"type=local,src={shared}")
    # In log order: the changed COPY and the steps after it run; the tools stage is reused.
    assert steps(log) == ["app.txt changed", "CACHED", "an earlier step changed",
                          "an earlier step changed"]
    assert third["rootfs"]["diff_ids"][0] == first["rootfs"]["diff_ids"][0]  # the base
    assert third["rootfs"]["diff_ids"][1:] != first["rootfs"]["diff_ids"][1:]


def test_an_unusable_cache_source_is_a_warning_not_a_failure(runner) -> None:
    _, shared, build = runner
    log, _, _ = build("one", "--cache-from", f"type=local,src={shared}")
    assert "cache from" in log and "not used" in log
    assert steps(log) == ["no earlier build"] * 4


def _exported_layers(shared: Path) -> set[str]:
    index = json.loads((shared / "index.json").read_text())
    digest = index["manifests"][0]["digest"].partition(":")[2]
    manifest = json.loads((shared / "blobs" / "sha256" / digest).read_text())
    return {layer["annotations"]["org.pybuild.layer.diff_id"] for layer in manifest["layers"]}
