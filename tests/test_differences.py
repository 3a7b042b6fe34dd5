"""pybuild's side of the conformance cases where it deliberately differs from this machine's
Docker 20.10 (tags `pybuild-differs` and `version-specific`; the README lists each difference)."""
from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from tests.conformance.cases import load_case, stage as stage_case
from tests.support import ROOT, busybox_base, pybuild

CASES = ROOT / "testdata" / "conformance"


def stage(tmp_path: Path, case: str) -> Path:
    """The case staged (its setup.sh run) by the conformance harness; its context."""
    return stage_case(load_case(CASES / case), tmp_path / "staged").context


def build(tmp_path: Path, context: Path, *args: str):
    env = {"PYBUILD_CACHE_DIR": str(tmp_path / "cache")}
    if "busybox:test" in (context / "Dockerfile").read_text():
        base = busybox_base(tmp_path)
        assert pybuild("load", "-i", str(base), env=env).returncode == 0
    out = tmp_path / "image.tar"
    return pybuild("-o", str(out), *args, str(context), env=env), out


def image_files(tarball: Path) -> dict[str, tarfile.TarInfo | bytes]:
    """Path -> content (regular files) or TarInfo, the top layer winning."""
    files: dict[str, tarfile.TarInfo | bytes] = {}
    with tarfile.open(tarball) as archive:
        manifest = json.load(archive.extractfile("manifest.json"))[0]
        for layer in manifest["Layers"]:
            with tarfile.open(fileobj=archive.extractfile(layer)) as entries:
                for info in entries:
                    files[info.name.rstrip("/")] = entries.extractfile(info).read() if info.isfile() else info
                    files[info.name.rstrip("/") + ":mode"] = info.mode
    return files


@pytest.mark.parametrize("case, line", [("25-copy-symlink-source-resolved-in-context", 3),
                                        ("26-copy-dotdot-source-stays-in-context", 2)])
def test_sources_outside_the_context_are_refused(tmp_path, case, line):
    """`../x`, and a symlink climbing above the context root, are errors (an absolute symlink
    target is read inside the context, as Docker does: case 25's line 2 builds)."""
    result, out = build(tmp_path, stage(tmp_path, case))
    assert result.returncode == 1
    assert "outside the build context" in result.stderr or "out of the build context" in result.stderr
    assert f"Dockerfile:{line}" in result.stderr
    assert not out.exists()


def test_chmod_is_expanded(tmp_path):
    result, out = build(tmp_path, stage(tmp_path, "21-copy-chmod-variable-ignored"))
    assert result.returncode == 0, result.stderr
    assert image_files(out)["f.txt:mode"] == 0o755


def test_wildcard_exception_reincludes_inside_an_excluded_directory(tmp_path):
    result, out = build(tmp_path, stage(tmp_path, "43-dockerignore-exception"))
    assert result.returncode == 0, result.stderr
    files = image_files(out)
    assert "ctx/dist/cache/keep" in files and "ctx/dist/keep.txt" in files
    assert "ctx/notes.md" not in files


@pytest.mark.parametrize("case, form", [("58-error-expand-dash-unsupported", "-"),
                                        ("59-error-expand-plus-unsupported", "+")])
def test_unset_forms_without_colon(tmp_path, case, form):
    result, out = build(tmp_path, stage(tmp_path, case))
    assert result.returncode == 0, result.stderr
    config = json.loads(next(v for k, v in image_files_configs(out)))
    env = dict(item.split("=", 1) for item in config["config"]["Env"])
    expected = {"-": ("[value]", "[]", "[word]"), "+": ("[word]", "[word]", "[]")}[form]
    assert (env["E_SET"], env["E_EMPTY"], env["E_UNSET"]) == expected


def image_files_configs(tarball: Path):
    with tarfile.open(tarball) as archive:
        manifest = json.load(archive.extractfile("manifest.json"))[0]
        yield manifest["Config"], archive.extractfile(manifest["Config"]).read()


@pytest.mark.parametrize("case, path, content", [
    ("151-run-heredoc", "heredoc.txt", b"first\nsecond\n"),
    ("152-run-heredoc-as-stdin", "greeting.txt", b"hello world\n"),
])
def test_run_heredocs(tmp_path, case, path, content):
    result, out = build(tmp_path, stage(tmp_path, case))
    assert result.returncode == 0, result.stderr
    assert image_files(out)[path] == content
