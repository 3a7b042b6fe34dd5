"""What `pybuild history` and `pybuild inspect` show of a stored image: its history as
`docker history` lists it, with each layer's size drawn as a bar so the heavy steps stand out,
and the document `docker image inspect` prints."""
from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TextIO

from builder.progress.modes import terminal_view_wanted
from builder.units import human_size
from layers.imagestore import StoredImage

BAR_WIDTH = 20
_CREATED_BY_WIDTH = 45  # where docker history cuts CREATED BY without --no-trunc


@dataclass(frozen=True)
class HistoryRow:
    """One history entry; `layer` is the diff ID of the layer it made (None for an empty layer),
    `size` that layer's size in the store."""

    created: str
    created_by: str
    size: int
    comment: str
    layer: str | None


def history_rows(image: StoredImage, layer_size: Callable[[str], int]) -> list[HistoryRow]:
    """Newest first. The entries that are not empty layers made the diff IDs, in order."""
    layers = iter(image.diff_ids)
    rows = []
    for entry in image.config.history:
        layer = None if entry.empty_layer else next(layers, None)
        rows.append(HistoryRow(entry.created, entry.created_by,
                               layer_size(layer) if layer else 0, entry.comment, layer))
    return rows[::-1]


def bar_cells(size: int, largest: int) -> int:
    """A layer's bar, in cells: the largest layer fills BAR_WIDTH; any non-empty layer gets at
    least one, so a small layer is told from an empty one."""
    if size <= 0:
        return 0
    return max(1, round(size * BAR_WIDTH / largest))


def history_lines(rows: list[HistoryRow], now: datetime, no_trunc: bool,
                  mark: str) -> list[tuple[str, str, str]]:
    """The table, a header and a line per row, each line split as the text before its bar, the
    bar (`mark` repeated, padded to BAR_WIDTH), and the text after it."""
    largest = max((row.size for row in rows), default=0)
    table = [("CREATED", "CREATED BY", "SIZE", "", "COMMENT")]
    for row in rows:
        created_by = " ".join(row.created_by.splitlines())
        if not no_trunc and len(created_by) > _CREATED_BY_WIDTH:
            created_by = created_by[:_CREATED_BY_WIDTH - 1] + "…"
        table.append((_since(row.created, now), created_by, human_size(row.size, significant=3),
                      mark * bar_cells(row.size, largest), row.comment))
    widths = [max(len(line[i]) for line in table) for i in range(3)]
    lines = []
    for line in table:
        before = "".join(f"{cell:<{width}}   " for cell, width in zip(line, widths))
        lines.append((before, f"{line[3]:<{BAR_WIDTH}}", f"   {line[4]}"))
    return lines


def print_history(rows: list[HistoryRow], no_trunc: bool, stream: TextIO | None = None) -> None:
    """On a terminal the bars are drawn with rich in colour; plain `#` where the build log would
    be plain too (not a terminal, NO_COLOR, TERM=dumb)."""
    stream = stream or sys.stdout
    now = datetime.now(timezone.utc)
    if not terminal_view_wanted(stream):
        for before, bar, after in history_lines(rows, now, no_trunc, "#"):
            print((before + bar + after).rstrip(), file=stream)
        return
    from rich.console import Console
    from rich.text import Text
    console = Console(file=stream, highlight=False, soft_wrap=True)
    for before, bar, after in history_lines(rows, now, no_trunc, "█"):
        console.print(Text.assemble(before, (bar, "cyan"), after.rstrip()))


def inspect_document(image: StoredImage, tags: list[str], size: int) -> dict[str, Any]:
    """One element of `docker image inspect`'s list: the image config's fields under Docker's
    names, with the ID, tags, size and layers. RepoDigests is empty: the store keeps no registry
    digests of its own."""
    config = json.loads(image.config_bytes)
    document: dict[str, Any] = {
        "Id": image.image_id, "RepoTags": tags, "RepoDigests": [],
        "Created": config.get("created", ""), "Author": config.get("author", ""),
        "Config": config.get("config") or {}, "Architecture": config.get("architecture", ""),
        "Os": config.get("os", ""), "Size": size,
        "RootFS": {"Type": "layers", "Layers": list(image.diff_ids)}}
    if config.get("variant"):
        document["Variant"] = config["variant"]
    return document


def _since(created: str, now: datetime) -> str:
    """Docker's units.HumanDuration of the time since `created`, plus " ago"."""
    try:
        then = datetime.fromisoformat(created)
    except ValueError:
        return created
    if then.tzinfo is None:
        then = then.replace(tzinfo=timezone.utc)
    seconds = int((now - then).total_seconds())
    hours = int(seconds / 3600 + 0.5)
    if seconds < 1:
        text = "Less than a second"
    elif seconds < 60:
        text = "1 second" if seconds == 1 else f"{seconds} seconds"
    elif seconds < 3600:
        text = "About a minute" if seconds < 120 else f"{seconds // 60} minutes"
    elif hours < 48:
        text = "About an hour" if hours == 1 else f"{hours} hours"
    elif hours < 24 * 7 * 2:
        text = f"{hours // 24} days"
    elif hours < 24 * 30 * 2:
        text = f"{hours // 24 // 7} weeks"
    elif hours < 24 * 365 * 2:
        text = f"{hours // 24 // 30} months"
    else:
        text = f"{seconds // 3600 // 24 // 365} years"
    return f"{text} ago"
