"""The one error type of the layer machinery."""
from __future__ import annotations


class LayerError(Exception):
    """A layer cannot be written or applied as asked: hostile or malformed tar input, or a source
    file that changed while it was being read. The message names the entry at fault, so the
    builder can report it without knowing anything about tar internals. A layer that raised this
    is incomplete and must be discarded."""
