"""lark, imported without the third-party `regex` module.

lark imports `regex` whenever it is installed (15 ms here, for every build that parses a new
Dockerfile and every `pybuild parse`), though it uses it only for `Lark(regex=True)`, which the
parser never asks for: the grammar's patterns are `re` patterns. `regex` stays importable for
anyone else.
"""
from __future__ import annotations

import sys

if "lark" not in sys.modules and "regex" not in sys.modules:
    sys.modules["regex"] = None  # type: ignore[assignment]  # `import regex` raises ImportError
    try:
        import lark  # noqa: F401
    finally:
        del sys.modules["regex"]

from lark import Lark, Token, Tree  # noqa: E402
from lark.exceptions import UnexpectedEOF, UnexpectedInput  # noqa: E402

__all__ = ["Lark", "Token", "Tree", "UnexpectedEOF", "UnexpectedInput"]
