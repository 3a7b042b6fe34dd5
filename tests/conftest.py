"""Shared pytest options and fixtures."""
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
