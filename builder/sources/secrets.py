"""Build secrets (`--secret`) and forwarded SSH agents (`--ssh`), as buildx takes them.

A secret is read only when a RUN mounts it, and its value goes nowhere but into that RUN's
sandbox (builder/sandbox/mounts.py: a tmpfs of the RUN's mount namespace, or the command's
environment with `env=`): not into a layer, the config, a cache key, the log or an error
message. Messages name a secret by its id and where it comes from, never by its value.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass


@dataclass(frozen=True)
class SecretSource:
    """`--secret id=ID[,src=FILE|,env=VAR]`: without either, the environment variable ID if it is
    set, else the file ID (buildx's rule)."""

    id: str
    file: str | None = None
    env: str | None = None

    def read(self) -> bytes | None:
        """The value, or None when its source does not exist."""
        env = self.env
        path = self.file
        if env is None and path is None:
            if self.id in os.environ:
                env = self.id
            else:
                path = self.id
        if env is not None:
            value = os.environ.get(env)
            return None if value is None else os.fsencode(value)
        try:
            with open(path, "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise ValueError(f"secret {self.id}: cannot read {path}: {error.strerror}") from None


@dataclass(frozen=True)
class SshSource:
    """`--ssh ID[=PATH[,PATH...]]`: an ssh-agent socket (default $SSH_AUTH_SOCK), or private key
    files that a private agent holds for the build (builder/sources/sshagent.py), forwarded into
    RUNs that mount `type=ssh,id=ID`."""

    id: str
    paths: tuple[str, ...] = ()

    def socket(self) -> str | None:
        """The agent socket given (one path that is a socket, or $SSH_AUTH_SOCK without paths);
        None when it is missing or the paths are key files."""
        if len(self.paths) > 1:
            return None
        path = self.paths[0] if self.paths else os.environ.get("SSH_AUTH_SOCK")
        if not path:
            return None
        try:
            mode = os.stat(path).st_mode
        except OSError:
            return None
        return path if stat.S_ISSOCK(mode) else None

    def keys(self) -> tuple[str, ...]:
        """The key files to load into an agent: the paths, unless they are one socket."""
        return () if self.socket() is not None else self.paths


def parse_secret(text: str) -> SecretSource:
    """`id=ID,src=FILE` (also `source=`), `id=ID,env=VAR`, `id=ID`; `type=file|env` accepted."""
    values: dict[str, str] = {}
    for field in text.split(","):
        key, has_value, value = field.partition("=")
        key = key.strip().lower()
        if not has_value or key not in ("id", "src", "source", "env", "type"):
            raise ValueError(f"--secret {text}: unexpected {field!r} (id=ID,src=FILE or "
                             "id=ID,env=VAR)")
        values["src" if key == "source" else key] = value
    ident = values.get("id")
    if not ident:
        raise ValueError(f"--secret {text}: needs id=ID")
    kind = values.get("type")
    if kind not in (None, "file", "env"):
        raise ValueError(f"--secret {text}: type must be file or env")
    source = values.get("src")
    if kind == "env":
        return SecretSource(ident, env=values.get("env") or source or ident)
    if kind == "file":
        return SecretSource(ident, file=source or ident)
    return SecretSource(ident, file=source, env=values.get("env"))


def parse_ssh(text: str) -> SshSource:
    """`default`, `ID`, `ID=SOCKET`, `ID=KEY[,KEY...]` (buildx's forms)."""
    ident, has_path, path = text.partition("=")
    paths = tuple(p for p in path.split(",") if p) if has_path else ()
    if not ident or has_path and not paths:
        raise ValueError(f"--ssh {text}: expected ID, ID=SOCKET or ID=KEYFILE[,KEYFILE...]")
    return SshSource(ident, tuple(os.path.abspath(p) for p in paths))
