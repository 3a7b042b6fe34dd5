"""`pybuild history` and `pybuild inspect` of an image a build stored: the rows are the image's
history with its layers' sizes (and bars in proportion); inspect has `docker image inspect`'s
shape."""
from __future__ import annotations

import io
import json
import os
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from builder.cli.history import BAR_WIDTH, _since, bar_cells
from builder.cli.images import history_command, inspect_command
from builder.units import human_size
from tests.support import pybuild

DOCKERFILE = """\
FROM scratch
COPY big.bin /big.bin
ENV MODE=test
COPY small.txt /small.txt
LABEL purpose="a rather long label that docker history cuts to forty-five characters"
COPY medium.bin /medium.bin
"""


@pytest.fixture
def built(tmp_path: Path) -> tuple[Path, str, dict]:
    """A cache root holding the image history:1, its image ID, and its config."""
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "big.bin").write_bytes(b"b" * 60_000)
    (context / "small.txt").write_text("small\n")
    (context / "medium.bin").write_bytes(b"m" * 20_000)
    (context / "Dockerfile").write_text(DOCKERFILE)
    cache, iid = tmp_path / "cache", tmp_path / "iid"
    result = pybuild("-t", "history:1", "--iidfile", str(iid), "-o", str(tmp_path / "out.tar"),
                     str(context), env={"PYBUILD_CACHE_DIR": str(cache)})
    assert result.returncode == 0, result.stderr
    image_id = iid.read_text()
    config = json.loads((cache / "blobs/sha256" / image_id.removeprefix("sha256:")).read_bytes())
    return cache, image_id, config


def layer_size(cache: Path, diff_id: str) -> int:
    return (cache / "blobs/sha256" / diff_id.removeprefix("sha256:")).stat().st_size


def test_history_rows_are_the_image_history_newest_first(built, capsys) -> None:
    cache, image_id, config = built
    assert history_command(["--cache-dir", str(cache), "--json", "history:1"]) == 0
    rows = json.loads(capsys.readouterr().out)
    history = config["history"][::-1]
    assert [row["created_by"] for row in rows] == [entry["created_by"] for entry in history]
    layers = iter(config["rootfs"]["diff_ids"][::-1])
    for row, entry in zip(rows, history):
        if entry.get("empty_layer"):
            assert (row["size"], row["layer"]) == (0, None)
        else:
            row_layer = next(layers)
            assert (row["layer"], row["size"]) == (row_layer, layer_size(cache, row_layer))
    # The same image by a prefix of its ID.
    assert history_command(["--cache-dir", str(cache), "--json", image_id[7:19]]) == 0
    assert json.loads(capsys.readouterr().out) == rows


def test_history_table_draws_sizes_as_proportional_bars(built, capsys) -> None:
    cache, _, _ = built
    assert history_command(["--cache-dir", str(cache), "history:1"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["CREATED", "CREATED", "BY", "SIZE", "COMMENT"]
    assert history_command(["--cache-dir", str(cache), "--json", "history:1"]) == 0
    rows = json.loads(capsys.readouterr().out)
    largest = max(row["size"] for row in rows)
    bar_column = table[0].index("COMMENT") - 3 - BAR_WIDTH
    for line, row in zip(table[1:], rows):
        assert human_size(row["size"], significant=3) in line and line.endswith(row["comment"])
        bar = line[bar_column:bar_column + BAR_WIDTH]
        assert bar.rstrip() == "#" * bar_cells(row["size"], largest)
    assert [line[bar_column:].startswith("#" * BAR_WIDTH) for line in table[1:]] == [
        row["size"] == largest for row in rows], "only the largest layer fills its bar"
    label = rows[1]["created_by"]
    assert label.startswith("LABEL") and f"{label[:44]}…   " in table[2]

    assert history_command(["--cache-dir", str(cache), "--no-trunc", "history:1"]) == 0
    assert "forty-five characters" in capsys.readouterr().out


def test_bars_and_times_read_like_dockers() -> None:
    assert [bar_cells(size, 1000) for size in (0, 1, 250, 500, 1000)] == [0, 1, 5, 10, BAR_WIDTH]
    now = datetime(2024, 6, 1, tzinfo=timezone.utc)
    ago = {seconds: _since((now - timedelta(seconds=seconds)).isoformat(), now)
           for seconds in (0, 30, 90, 600, 3600, 86400 * 3, 86400 * 20, 86400 * 100, 86400 * 800)}
    assert list(ago.values()) == [
        "Less than a second ago", "30 seconds ago", "About a minute ago", "10 minutes ago",
        "About an hour ago", "3 days ago", "2 weeks ago", "3 months ago", "2 years ago"]


def test_inspect_is_docker_image_inspect_shaped(built, capsys) -> None:
    cache, image_id, config = built
    assert inspect_command(["--cache-dir", str(cache), "history:1"]) == 0
    (document,) = json.loads(capsys.readouterr().out)
    assert document["Id"] == image_id
    assert document["RepoTags"] == ["history:1"] and document["RepoDigests"] == []
    assert document["RootFS"] == {"Type": "layers", "Layers": config["rootfs"]["diff_ids"]}
    assert document["Config"] == config["config"] and document["Created"] == config["created"]
    assert document["Size"] == sum(layer_size(cache, d) for d in config["rootfs"]["diff_ids"])
    assert (document["Architecture"], document["Os"]) == (config["architecture"], "linux")


def test_an_unknown_image_is_an_error(built, capsys) -> None:
    cache, _, _ = built
    for command in (history_command, inspect_command):
        assert command(["--cache-dir", str(cache), "missing:1"]) == 1
        assert capsys.readouterr().err == "ERROR: no such image: missing:1\n"


def test_bars_are_drawn_in_colour_on_a_terminal(monkeypatch) -> None:
    from builder.cli.history import HistoryRow, print_history

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    rows = [HistoryRow("", "COPY a /", 10, "", "sha256:" + "a" * 64)]
    stream = Terminal()
    print_history(rows, False, stream)
    assert "█" * BAR_WIDTH in stream.getvalue() and "\x1b[" in stream.getvalue()
    monkeypatch.setenv("NO_COLOR", "1")
    stream = Terminal()
    print_history(rows, False, stream)
    assert "#" * BAR_WIDTH in stream.getvalue() and "\x1b[" not in stream.getvalue()


def test_a_reader_that_stops_early_ends_the_verb_quietly(built, monkeypatch, capsys) -> None:
    """`pybuild inspect IMAGE | head`: no `ERROR: Broken pipe`, and SIGPIPE's status."""
    cache, _, _ = built
    read, write = os.pipe()
    os.close(read)
    with os.fdopen(write, "w") as closed:
        monkeypatch.setattr(sys, "stdout", closed)
        status = inspect_command(["--cache-dir", str(cache), "history:1"])
        monkeypatch.undo()
    assert status == 141 and capsys.readouterr().err == ""
