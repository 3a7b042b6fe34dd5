"""Shared pytest options and fixtures."""
from pathlib import Path

import pytest

from tests.support import DockerImages, docker_available, require


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite golden files (testdata/parser*/, testdata/logs/) from the "
                          "current output instead of comparing with them")


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    """`pytest --update-golden`: the one way to rewrite golden files; review the diff."""
    return request.config.getoption("--update-golden")


@pytest.fixture
def images():
    """Docker images (and containers) a test makes, removed afterwards; needs a Docker engine."""
    require(docker_available(), "a running Docker engine")
    images = DockerImages()
    yield images
    images.cleanup()


@pytest.fixture(scope="session")
def debian_archive(tmp_path_factory) -> Path:
    """The Debian base images of tests/debian_base.py as one docker-save archive, made once per
    session (it takes seconds and holds the whole root)."""
    from tests.debian_base import make_debian_archive  # loads the recipe: only when asked
    return make_debian_archive(tmp_path_factory.mktemp("debian-base"))
