"""Small directory trees for unit tests: a build context, an image's snapshot."""
from __future__ import annotations

import os
from pathlib import Path

from builder.sources.dockerignore import IgnoreMatcher, parse_dockerignore
from builder.sources.tree import ContextTree


def write_tree(root: Path, files: dict[str, str | None]) -> Path:
    """`files`: path -> text (a file), None (a directory), or "-> target" (a symlink); a path
    that exists is left as it is."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        path = root / rel
        if os.path.lexists(path):
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            path.mkdir(exist_ok=True)
        elif content.startswith("-> "):
            os.symlink(content[3:], path)
        else:
            path.write_text(content)
    return root


def context(root: Path, files: dict[str, str | None], ignore: str = "") -> ContextTree:
    write_tree(root, files)
    return ContextTree(str(root), IgnoreMatcher(parse_dockerignore(ignore)))
