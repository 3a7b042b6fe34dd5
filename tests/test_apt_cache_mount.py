"""The apt cache-mount pattern of BuildKit's documentation on a real Debian base, cold and warm:

    RUN rm -f /etc/apt/apt.conf.d/docker-clean
    RUN --mount=type=cache,target=/var/cache/apt,sharing=locked \\
        --mount=type=cache,target=/var/lib/apt,sharing=locked \\
        apt-get update && apt-get install -y --no-install-recommends jq

apt fetches from the local repository of tests/debian_base.py over http on 127.0.0.1, which
counts the .deb files asked for: a cold build downloads every one into the cache mount; a warm
build whose apt step re-runs downloads none, because apt finds them in /var/cache/apt/archives;
and with Docker's docker-clean left in place apt deletes them, so the warm build downloads all
again (what the pattern's first line is for).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.debian_base import BASE, apt_repo, prepared_debs
from tests.support import image_file, pybuild

DOCKERFILE = """\
FROM {base}
ARG APT_REPO
RUN {clean}echo "deb [trusted=yes] $APT_REPO ./" > /etc/apt/sources.list
ARG REBUILD=1
RUN --mount=type=cache,target=/var/cache/apt,sharing=locked \\
    --mount=type=cache,target=/var/lib/apt,sharing=locked \\
    apt-get update && apt-get install -y --no-install-recommends jq \\
 && {{ ls /var/cache/apt/archives/ | grep -c '\\.deb$' || true; }} > /debs-in-cache
RUN echo {later} > /later && jq -n '"jq runs"' > /jq.txt
"""


def _build(context: Path, cache: Path, dockerfile: str, repo_url: str, *args: str) -> Path:
    (context / "Dockerfile").write_text(dockerfile)
    out = context.parent / "image.tar"
    result = pybuild("--progress", "plain", "-o", str(out), "--build-arg", f"APT_REPO={repo_url}",
                     *args, str(context), env={"PYBUILD_CACHE_DIR": str(cache)})
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.mark.parametrize("keep_docker_clean", [False, True], ids=["pattern", "docker-clean-kept"])
def test_warm_build_reuses_the_downloaded_debs(tmp_path, debian_archive, keep_docker_clean):
    cache = tmp_path / "cache"
    loaded = pybuild("load", "-i", str(debian_archive), env={"PYBUILD_CACHE_DIR": str(cache)})
    assert loaded.returncode == 0, loaded.stderr
    context = tmp_path / "context"
    context.mkdir()
    clean = "" if keep_docker_clean else "rm -f /etc/apt/apt.conf.d/docker-clean && "
    debs = len(prepared_debs())
    with apt_repo() as repo:
        cold = _build(context, cache, DOCKERFILE.format(base=BASE, clean=clean, later=1), repo.url)
        assert len(repo.debs_requested()) == debs, repo.requests
        assert image_file(cold, "jq.txt") == b'"jq runs"\n'
        cached_after_cold = 0 if keep_docker_clean else debs
        assert image_file(cold, "debs-in-cache") == f"{cached_after_cold}\n".encode()

        before = len(repo.requests)
        _build(context, cache, DOCKERFILE.format(base=BASE, clean=clean, later=2), repo.url)
        assert repo.requests[before:] == []  # a later step changed: the apt step is a cache hit

        before = len(repo.debs_requested())
        warm = _build(context, cache, DOCKERFILE.format(base=BASE, clean=clean, later=3), repo.url,
                      "--build-arg", "REBUILD=2")  # the apt step runs again, the mounts warm
        downloaded = repo.debs_requested()[before:]
        assert len(downloaded) == (debs if keep_docker_clean else 0), downloaded
        assert image_file(warm, "debs-in-cache") == f"{cached_after_cold}\n".encode()
        assert image_file(warm, "jq.txt") == b'"jq runs"\n'
