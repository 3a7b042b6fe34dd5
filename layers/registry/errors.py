"""The registry's one error type, and how a registry's answer becomes its message.

Messages show the registry's own error codes and messages verbatim (a client that swallows them
leaves users guessing) and name the reference the user asked for. They never carry a password,
a token or an Authorization header: nothing secret is ever passed to this module.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from http.client import responses

from layers.errors import LayerError
from layers.reference import Reference

_BODY_EXCERPT = 200


class RegistryError(LayerError):
    """A registry request failed. `status` is the HTTP status when the registry answered one;
    `subject` ("pull 127.0.0.1:5000/app:1") is set once, by the outermost public call."""

    def __init__(self, message: str, status: int | None = None, subject: str = "") -> None:
        super().__init__(f"{subject}: {message}" if subject else message)
        self.message = message
        self.status = status
        self.subject = subject


@contextmanager
def about(action: str, ref: Reference) -> Iterator[None]:
    """Name `action` and `ref` in the RegistryErrors raised inside, so the user sees which image
    failed; an error already named by an inner public call keeps its name."""
    try:
        yield
    except RegistryError as error:
        if error.subject:
            raise
        raise RegistryError(error.message, error.status, f"{action} {ref.familiar()}") from None


def describe(status: int, body: bytes) -> str:
    """`404 MANIFEST_UNKNOWN manifest unknown`: the status and the registry's JSON errors as it
    sent them, or an excerpt of a body that is not the distribution error format."""
    try:
        errors = json.loads(body)["errors"]
        details = "; ".join(f"{e.get('code', '')} {e.get('message', '')}".strip() for e in errors)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        details = body[:_BODY_EXCERPT].decode(errors="replace").strip()
    return f"{status} {details or responses.get(status, '')}".strip()
