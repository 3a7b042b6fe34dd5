"""Coverage-guided fuzzing of layer extraction, `layers.unpack.apply_layer` (atheris):

    python3 tests/fuzz/fuzz_unpack.py [CORPUS_DIR...] [-max_total_time=SECONDS] [libFuzzer options]

Random bytes seldom make a tar whose header checksums hold, so the input's bytes choose the
entries of two layers instead (tests/fuzz/tarspec.py): names made of hostile pieces (`..`,
absolute paths, whiteouts, the way out through a symlink), every entry type, link targets that
point out of the root, odd modes, times, ids, device numbers and xattrs; now and then the tar is
cut short. The lower layer is applied, then the upper one, into `root` beside a directory
`outside`. Findings: any exception but LayerError, anything written outside `root`.
"""
from __future__ import annotations

import io
import os
import shutil
import sys
import tempfile

import atheris

with atheris.instrument_imports():
    from layers.errors import LayerError
    from layers.unpack import apply_layer
    from tests.fuzz.tarspec import layers_from

# Under $TMPDIR, left there: libFuzzer ends the process without Python's clean-up.
_WORK = tempfile.mkdtemp(prefix="fuzz-unpack-")
_OUTSIDE = os.path.join(_WORK, "outside")


def _outside_state() -> list[tuple[str, int, int]]:
    """What `outside` and the work directory hold: names, modes, sizes."""
    found = [("work", *_mode_size(_WORK))]
    for directory, dirs, files in os.walk(_OUTSIDE):
        for name in sorted(dirs + files):
            path = os.path.join(directory, name)
            found.append((os.path.relpath(path, _WORK), *_mode_size(path)))
    return found + [(name, 0, 0) for name in sorted(os.listdir(_WORK))]


def _mode_size(path: str) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_mode, st.st_size


def _reset() -> None:
    for name in os.listdir(_WORK):
        path = os.path.join(_WORK, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, onerror=_open_up)
        else:
            os.unlink(path)
    os.makedirs(os.path.join(_OUTSIDE, "dir"))
    with open(os.path.join(_OUTSIDE, "file"), "w") as handle:
        handle.write("outside\n")
    os.mkdir(os.path.join(_WORK, "root"))


def _open_up(func, path, exc_info) -> None:
    """rmtree's way through directories a layer left without write or search permission."""
    os.chmod(os.path.dirname(path), 0o700)
    if os.path.isdir(path) and not os.path.islink(path):
        os.chmod(path, 0o700)
    func(path)


_reset()
_BEFORE = _outside_state()


def one_input(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    lower, upper, whiteouts = layers_from(provider, _OUTSIDE)
    _reset()
    root = os.path.join(_WORK, "root")
    try:
        apply_layer(io.BytesIO(lower), root, whiteouts=whiteouts)
        apply_layer(io.BytesIO(upper), root, whiteouts=whiteouts)
    except LayerError as error:
        str(error)
    after = _outside_state()
    if after != _BEFORE:
        raise AssertionError(f"written outside the root: {sorted(set(after) ^ set(_BEFORE))}")


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
