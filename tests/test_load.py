"""`--load`: the image goes into Docker through `docker load`, streamed (no tarball) or from the
-o file; no docker command, or a docker load that fails, fails the build."""
from __future__ import annotations

from pathlib import Path

import pytest

from builder import cli
from builder.output import dockerload
from builder.api import BuildRequest, build
from layers.errors import LayerError
from tests.support import DockerImages, busybox_base, pybuild


def test_load_streams_the_image_into_docker(images: DockerImages, tmp_path: Path) -> None:
    env = {"PYBUILD_CACHE_DIR": str(tmp_path / "cache")}
    assert pybuild("load", "-q", "-i", str(busybox_base(tmp_path)), env=env).returncode == 0
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text('FROM busybox:test\nCMD ["echo", "loaded by pybuild"]\n')
    streamed, from_file = images.name("pybuild-load"), images.name("pybuild-load-file")
    iid = tmp_path / "iid"
    result = pybuild("--load", "-t", streamed, "--iidfile", str(iid), str(context), env=env,
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"Loaded image: {streamed}" in result.stderr
    assert list(tmp_path.glob("*.tar")) == [tmp_path / "busybox.tar"], "no tarball is written"
    assert images.inspect(streamed)["Id"] == iid.read_text()
    run = images.run(streamed)
    assert (run.returncode, run.stdout) == (0, b"loaded by pybuild\n")

    out = tmp_path / "out.tar"
    result = pybuild("--load", "-t", from_file, "-o", str(out), "--iidfile", str(iid),
                     str(context), env=env)
    assert result.returncode == 0, result.stderr
    assert out.exists() and images.inspect(from_file)["Id"] == iid.read_text()


def test_load_without_a_docker_command_fails_before_building(tmp_path: Path, monkeypatch,
                                                             capsys) -> None:
    monkeypatch.setattr(dockerload, "docker_command", lambda: None)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    status = cli.main(["--load", "--cache-dir", str(tmp_path / "cache"), "."])
    assert status == 1
    assert "--load needs the docker command" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("output", [None, "out.tar"])
def test_a_failed_docker_load_fails_the_build_with_what_docker_said(tmp_path: Path,
                                                                    output) -> None:
    docker = tmp_path / "docker"
    docker.write_text("#!/bin/sh\necho 'Error: no space left for images' >&2\nexit 1\n")
    docker.chmod(0o755)
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    request = BuildRequest(context=str(tmp_path), docker_load=str(docker),
                           output=output and str(tmp_path / output),
                           cache_dir=str(tmp_path / "cache"))
    with pytest.raises(LayerError, match="docker load failed: Error: no space left for images"):
        build(request)
