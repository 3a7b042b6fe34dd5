"""The outputs' atomic replacement (builder/output/atomicfile.py): over an existing file the new
one is swapped in (RENAME_EXCHANGE, which spares ext4 a flush of the new file), and a reader
still never sees the path missing or half written, nor is anything left beside it."""
from __future__ import annotations

import os
import threading

import pytest

from builder.output.atomicfile import replacing, write_atomically


@pytest.mark.parametrize("before", [None, b"the previous image", b"x" * (3 << 20)])
def test_replacing_leaves_the_new_content_alone(tmp_path, before):
    path = tmp_path / "image.tar"
    if before is not None:
        path.write_bytes(before)
        os.link(path, tmp_path / "kept")  # another name of the old file: untouched
    write_atomically(str(path), b"the new image")
    assert path.read_bytes() == b"the new image"
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)
    expected = ["image.tar"] + (["kept"] if before is not None else [])
    assert sorted(os.listdir(tmp_path)) == expected
    if before is not None:
        assert (tmp_path / "kept").read_bytes() == before


def test_an_open_reader_keeps_reading_the_old_file(tmp_path):
    path = tmp_path / "image.tar"
    path.write_bytes(b"old" * 1000)
    with open(path, "rb") as reader:
        write_atomically(str(path), b"new")
        assert reader.read() == b"old" * 1000
    assert path.read_bytes() == b"new"


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "image.tar"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), replacing(str(path)) as out:
        out.write(b"half")
        raise RuntimeError("the build failed")
    assert sorted(os.listdir(tmp_path)) == ["image.tar"] and path.read_bytes() == b"old"


def test_a_reader_never_finds_the_path_missing_or_partial(tmp_path):
    """A reader polling the path while it is replaced again and again: a swap followed by the
    old file's removal must never leave a moment without the file, nor show a mix."""
    path = tmp_path / "image.tar"
    contents = [bytes([n]) * 65536 for n in range(1, 5)]
    path.write_bytes(contents[0])
    seen: list[bytes] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            with open(path, "rb") as handle:  # FileNotFoundError fails the test below
                seen.append(handle.read())
    errors: list[BaseException] = []
    reader = threading.Thread(target=_catching, args=(read, errors))
    reader.start()
    try:
        for round_ in range(200):
            write_atomically(str(path), contents[round_ % len(contents)])
    finally:
        stop.set()
        reader.join()
    assert not errors, errors
    assert seen and all(content in contents for content in seen)
    assert sorted(os.listdir(tmp_path)) == ["image.tar"]


def _catching(function, errors: list[BaseException]) -> None:
    try:
        function()
    except BaseException as error:  # noqa: BLE001 - handed to the test's thread
        errors.append(error)
