"""testdata/images/debian/make.py on a small root of the test's own: the layer keeps hardlinks
and symlinks, refuses what it cannot carry, and a preparation counts only for its own recipe."""
from __future__ import annotations

import io
import json
import os
import tarfile

import pytest

from tests.debian_base import recipe_module


def _members(layer: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        return {member.name: member for member in tar}


def test_layer_keeps_hardlinks_symlinks_and_owners_by_number(tmp_path):
    root = tmp_path / "rootfs"
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "bin" / "perl").write_bytes(b"#!perl\n")
    os.link(root / "usr" / "bin" / "perl", root / "usr" / "bin" / "perl5.36.0")
    os.symlink("perl", root / "usr" / "bin" / "perl-link")
    members = _members(recipe_module().layer(str(root)))
    assert list(members) == ["usr", "usr/bin", "usr/bin/perl", "usr/bin/perl-link",
                             "usr/bin/perl5.36.0"]
    assert members["usr/bin/perl5.36.0"].islnk()
    assert members["usr/bin/perl5.36.0"].linkname == "usr/bin/perl"
    assert members["usr/bin/perl-link"].issym() and members["usr/bin/perl-link"].linkname == "perl"
    assert {(m.uname, m.gname) for m in members.values()} == {("", "")}


def test_layer_refuses_extended_attributes_rather_than_dropping_them(tmp_path):
    root = tmp_path / "rootfs"
    root.mkdir()
    (root / "ping").write_bytes(b"\x7fELF")
    try:
        os.setxattr(root / "ping", "user.pybuild", b"1")
    except OSError:
        pytest.skip("this file system takes no user xattrs")
    with pytest.raises(SystemExit, match="has extended attributes"):
        recipe_module().layer(str(root))


@pytest.mark.parametrize("change, counts", [
    ({}, True),
    ({"recipe": 0}, False),  # an older recipe: prepare makes it again
    ({"packages": ["jq"]}, False),
])
def test_a_preparation_counts_only_for_its_recipe(tmp_path, change, counts):
    make = recipe_module()
    (tmp_path / "READY").write_text(json.dumps({**make.recipe(), "architecture": "amd64",
                                                "debs": [], **change}))
    assert (make.ready(str(tmp_path)) is not None) == counts
