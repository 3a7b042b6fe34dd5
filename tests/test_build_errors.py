"""Errors in the shape users know from BuildKit: the message, the command's last output and exit
status, then the Dockerfile around the failing line with ` >>> ` marking it (and a caret under
the column of a parse error)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.api import BuildRequest, build
from grammar.errors import DockerfileError
from tests.support import busybox_base, pybuild

SEVEN_LINES = tuple(f"line {n}" for n in range(1, 8))


def test_the_excerpt_marks_the_instruction_between_two_lines_of_context() -> None:
    error = DockerfileError("boom", line=3, end_line=4, source=SEVEN_LINES)
    assert error.render() == "\n".join([
        "Dockerfile:3: boom",
        "--------------------",
        "   1 |     line 1",
        "   2 |     line 2",
        "   3 | >>> line 3",
        "   4 | >>> line 4",
        "   5 |     line 5",
        "   6 |     line 6",
        "--------------------"])


def test_a_column_gets_a_caret_and_the_edges_of_the_file_cut_the_context() -> None:
    error = DockerfileError("bad", line=7, column=6, hint="try this", source=SEVEN_LINES)
    assert error.render().splitlines() == [
        "Dockerfile:7:6: bad (try this)",
        "--------------------",
        "   5 |     line 5",
        "   6 |     line 6",
        "   7 | >>> line 7",
        "     |          ^",
        "--------------------"]


def test_the_source_is_attached_only_to_errors_about_that_file() -> None:
    error = DockerfileError("bad", file="ONBUILD trigger of base", line=1, source_line="RUN x")
    assert error.in_source("FROM x\n", "Dockerfile") is error
    unplaced = DockerfileError("bad")
    assert unplaced.in_source("FROM x\n", "Dockerfile") is unplaced
    assert DockerfileError("bad", line=1, source_line="RUN x").render() == \
        "Dockerfile:1: bad\n  1 | RUN x"


def test_a_build_error_marks_every_line_of_its_instruction(tmp_path: Path) -> None:
    text = "FROM scratch\nENV A=1\nCOPY \\\n  missing.txt /\nENV B=2\n"
    with pytest.raises(DockerfileError) as caught:
        build(BuildRequest(context=str(tmp_path), dockerfile_text=text, output=None,
                           cache_dir=str(tmp_path / "cache")))
    lines = caught.value.render().splitlines()
    assert lines[0] == "Dockerfile:3: 'missing.txt': not found in the build context"
    assert lines[-5:] == ["   2 |     ENV A=1", "   3 | >>> COPY \\", "   4 | >>>   missing.txt /",
                          "   5 |     ENV B=2", "--------------------"]


def test_a_parse_error_shows_its_line_and_column(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCPY a.txt /\nENV A=1\n")
    result = pybuild("-o", str(tmp_path / "out.tar"), str(tmp_path),
                     env={"PYBUILD_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 1
    assert result.stderr.endswith("\n".join([
        "ERROR: Dockerfile:2:1: unknown instruction: CPY (did you mean COPY?)",
        "--------------------",
        "   1 |     FROM scratch",
        "   2 | >>> CPY a.txt /",
        "     |     ^",
        "   3 |     ENV A=1",
        "--------------------"]) + "\n")


def test_a_failing_run_shows_its_output_its_status_and_its_line(tmp_path: Path) -> None:
    env = {"PYBUILD_CACHE_DIR": str(tmp_path / "cache")}
    assert pybuild("load", "-q", "-i", str(busybox_base(tmp_path)), env=env).returncode == 0
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM busybox:test\nENV A=1\nRUN echo oops && exit 3\n"
                                        'CMD ["sh"]\n')
    args = ("--network", "none", "-o", str(tmp_path / "out.tar"), str(context))

    result = pybuild("--progress", "plain", *args, env=env)
    assert result.returncode == 1
    error = result.stderr[result.stderr.index("ERROR: "):]
    assert error == "\n".join([
        "ERROR: Dockerfile:3: RUN exited with status 3; last output:",
        "  > oops",
        "--------------------",
        "   1 |     FROM busybox:test",
        "   2 |     ENV A=1",
        "   3 | >>> RUN echo oops && exit 3",
        '   4 |     CMD ["sh"]',
        "--------------------"]) + "\n"
    assert "#2 ERROR" in result.stderr

    result = pybuild("--progress", "json", *args, env=env)
    failed = json.loads(result.stderr.splitlines()[-1])
    assert failed["event"] == "BuildFailed"
    assert "status 3" in failed["error"] and "   3 | >>> RUN echo oops && exit 3" in failed["error"]


@pytest.mark.parametrize("step", ["COPY f /loop/w", "WORKDIR /loop/w"])
def test_a_symlink_loop_in_the_image_fails_naming_the_step(tmp_path: Path, step: str) -> None:
    """The image's symlinks are followed to a destination (as Docker: `too many links`): a link
    that leads to itself is an error of that step."""
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "loop").symlink_to("/loop/x")
    (tmp_path / "f").write_text("f")
    text = f"FROM scratch\nCOPY tree/ /\n{step}\n"
    with pytest.raises(DockerfileError) as caught:
        build(BuildRequest(context=str(tmp_path), dockerfile_text=text, output=None,
                           cache_dir=str(tmp_path / "cache")))
    keyword = step.split()[0]
    assert caught.value.render().splitlines()[0] == \
        f"Dockerfile:3: {keyword}: /loop/w: too many levels of symbolic links"
