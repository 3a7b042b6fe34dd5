"""`pybuild --check` and `--call=check|outline|targets` through the CLI: exit statuses, what
they print, that no build happens; `# check=error=true` failing a real build."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support import ROOT, pybuild

LINT = ROOT / "testdata" / "lint"
OUTLINE = LINT / "outline"


@pytest.mark.parametrize(("case", "status"), [
    ("FromAsCasing/triggers", 1), ("FromAsCasing/passes", 1), ("StageNameCasing/passes", 0),
    ("CopyIgnoredFile/triggers", 1), ("CopyIgnoredFile/passes", 0)])
@pytest.mark.parametrize("flag", [["--check"], ["--call=check"], ["--call", "check"]])
def test_check_prints_the_report_and_exits_as_buildx(case: str, status: int, flag: list[str],
                                                     tmp_path: Path) -> None:
    result = pybuild(*flag, str(LINT / case), cwd=tmp_path)
    assert result.returncode == status, result.stderr
    assert result.stdout.decode() == (LINT / case / "expected.txt").read_text()
    assert not list(tmp_path.iterdir())  # no image.tar: nothing was built


def test_check_of_a_dockerfile_on_stdin(tmp_path: Path) -> None:
    result = pybuild("--check", "-f", "-", str(tmp_path),
                     input=b"FROM scratch as base\nCMD run\n")
    assert result.returncode == 1
    report = result.stdout.decode()
    assert report.startswith("Check complete, 2 warnings have been found!\n")
    assert "WARNING: FromAsCasing - https://docs.docker.com/go/dockerfile/rule/from-as-casing/\n" \
           "'as' and 'FROM' keywords' casing do not match\nDockerfile:1\n" in report


def test_check_of_a_bad_dockerfile_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\nNOPE x\n")
    result = pybuild("--check", str(tmp_path))
    assert result.returncode == 1
    assert "Dockerfile:2" in result.stderr and result.stdout == b""


@pytest.mark.parametrize("value", ["bogus", "lint,format=json", ""])
def test_unknown_call_is_a_usage_error(value: str, tmp_path: Path) -> None:
    result = pybuild(f"--call={value}", str(OUTLINE), cwd=tmp_path)
    assert result.returncode == 2
    assert "--call" in result.stderr and result.stdout == b""


@pytest.mark.parametrize(("args", "golden"), [
    (["--call=targets"], "targets.txt"),
    (["--call=outline"], "outline-default.txt"),
    (["--call=outline", "--target", "build", "--build-arg", "GOARCH=arm64"], "outline-build.txt"),
    (["--call=outline", "--target", "docs"], "outline-docs.txt"),
    # Globals a FROM uses (and those their defaults use), a stage's ARGs inheriting, a
    # description above a `# check=` comment, the stages a COPY --from needs.
    (["--call=outline", "-f", str(OUTLINE / "Dockerfile.inherited"), "--target", "release",
      "--build-arg", "RETRIES=5"], "outline-inherited.txt")])
def test_outline_and_targets(args: list[str], golden: str, update_golden: bool) -> None:
    result = pybuild(*args, str(OUTLINE))
    assert result.returncode == 0, result.stderr
    if update_golden:
        (OUTLINE / golden).write_bytes(result.stdout)
    assert result.stdout.decode() == (OUTLINE / golden).read_text()


def test_outline_of_an_unknown_target_fails() -> None:
    result = pybuild("--call=outline", "--target", "nope", str(OUTLINE))
    assert result.returncode == 1
    assert 'target stage "nope" could not be found' in result.stderr


def _context(tmp_path: Path, dockerfile: str) -> Path:
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(dockerfile)
    (context / "a.txt").write_text("a\n")
    return context


@pytest.mark.parametrize(("directive", "args", "status"), [
    ("# check=error=true\n", [], 1), ("", [], 0),
    ("# check=error=true;skip=FromAsCasing\n", [], 0),
    # The build arg replaces the directive, as in BuildKit.
    ("", ["--build-arg", "BUILDKIT_DOCKERFILE_CHECK=error=true"], 1),
    ("# check=error=true\n", ["--build-arg", "BUILDKIT_DOCKERFILE_CHECK=skip=all"], 0)])
def test_error_true_fails_the_build_after_the_warnings(directive: str, args: list[str],
                                                       status: int, tmp_path: Path) -> None:
    context = _context(tmp_path, directive + "FROM scratch as base\nCOPY a.txt /a.txt\n")
    out = tmp_path / "image.tar"
    result = pybuild("--progress=plain", "-o", str(out), *args, str(context),
                     env={"PYBUILD_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == status, result.stderr
    assert out.exists() == (status == 0)
    line = 1 + directive.count("\n")
    warned = f"WARNING: Dockerfile:{line}: FromAsCasing: 'as' and 'FROM' keywords' casing do not " \
             "match"
    assert (warned in result.stderr) == ("skip" not in directive + " ".join(args))
    assert "not consumed" not in result.stderr
    if status:
        failed = f"ERROR: Dockerfile:{line}: lint violation found for rules: FromAsCasing"
        assert result.stderr.index(warned) < result.stderr.index(failed)
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)


def test_outline_follows_run_mount_stages(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(
        "FROM scratch AS tools\n# TOOL the tool to fetch\nARG TOOL=make\n"
        "FROM scratch AS other\nARG OTHER=1\n"
        "FROM scratch\nRUN --mount=type=bind,from=tools,target=/t true\n")
    result = pybuild("--call=outline", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == ("BUILD ARG   VALUE   DESCRIPTION\n"
                                      "TOOL        make    the tool to fetch\n\n")
