"""The pieces of registry authentication that are plain data: the `WWW-Authenticate` challenge,
token scopes, and the token server's answer (distribution `docs/spec/auth/token.md`).

A scope set is a frozenset of (resource, action) pairs, `("repository:app", "push")`: the union of
two sets is what a token must grant to serve both, and "this token covers that request" is a
subset test. Rendered back, actions of one resource are joined (`repository:app:pull,push`).
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass

Scopes = frozenset[tuple[str, str]]

# RFC 7235 auth-params: name=token or name="quoted string" (with backslash escapes).
_PARAM = re.compile(r'([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))')
_MIN_LIFETIME = 60  # token.md: expires_in defaults to 60 s and is never less


@dataclass(frozen=True)
class Challenge:
    """What a 401 asks for: `basic`, or `bearer` with the token server's realm and service."""

    scheme: str
    realm: str = ""
    service: str = ""
    scopes: Scopes = frozenset()


@dataclass(frozen=True)
class Token:
    value: str
    expires_at: float


def parse_scopes(text: str) -> Scopes:
    """`repository:app:pull,push repository:base:pull` (space-separated, as several `scope`
    parameters) into (resource, action) pairs."""
    pairs = set()
    for scope in text.split():
        resource, _, actions = scope.rpartition(":")
        pairs.update((resource, action) for action in actions.split(",") if action)
    return frozenset(pairs)


def render_scopes(scopes: Scopes) -> list[str]:
    """One `type:name:actions` string per resource, sorted so equal sets give equal queries."""
    actions: dict[str, list[str]] = {}
    for resource, action in sorted(scopes):
        actions.setdefault(resource, []).append(action)
    return [f"{resource}:{','.join(names)}" for resource, names in actions.items()]


def parse_challenge(header: str) -> Challenge | None:
    """The challenge of a `WWW-Authenticate` header; Bearer wins when several are offered."""
    schemes = re.findall(r"(?:^|,)\s*(Bearer|Basic)\b", header, re.IGNORECASE)
    if not schemes:
        return None
    if "bearer" not in (s.lower() for s in schemes):
        return Challenge("basic")
    params = {name.lower(): re.sub(r"\\(.)", r"\1", quoted) if quoted else bare
              for name, quoted, bare in _PARAM.findall(header)}
    return Challenge("bearer", params.get("realm", ""), params.get("service", ""),
                     parse_scopes(params.get("scope", "")))


def parse_token(body: bytes, now: float | None = None) -> Token:
    """The token server's JSON answer: `token` or `access_token` (equivalent), `expires_in`."""
    try:
        answer = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nested too deep
        raise ValueError("the token server's answer is not JSON") from None
    if not isinstance(answer, dict):
        raise ValueError("the token server's answer is not a JSON object")
    value = answer.get("token") or answer.get("access_token")
    if not isinstance(value, str) or not value:
        raise ValueError("the token server's answer has no token")
    lifetime = answer.get("expires_in")
    lifetime = max(lifetime, _MIN_LIFETIME) if isinstance(lifetime, int) else _MIN_LIFETIME
    return Token(value, (time.time() if now is None else now) + lifetime)
