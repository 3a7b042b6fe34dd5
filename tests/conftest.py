"""Shared pytest options."""


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite golden files (testdata/parser*/) from the current output "
                          "instead of comparing with them")
