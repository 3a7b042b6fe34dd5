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
    """`--ssh ID[=SOCKET]`: an ssh-agent socket (default $SSH_AUTH_SOCK) forwarded into RUNs that
    mount `type=ssh,id=ID`."""

    id: str
    path: str | None

    def socket(self) -> str | None:
        """The socket's path, or None when it is missing."""
        path = self.path or os.environ.get("SSH_AUTH_SOCK")
        if not path:
            return None
        try:
            mode = os.stat(path).st_mode
        except OSError:
            return None
        if not stat.S_ISSOCK(mode):
            raise ValueError(f"--ssh {self.id}={path}: not a socket (pybuild forwards an "
                             "ssh-agent's socket; load key files into an agent with ssh-add)")
        return path


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
    """`default`, `ID`, `ID=SOCKET` (buildx also takes key files: refused with how to do it)."""
    ident, has_path, path = text.partition("=")
    if not ident or has_path and not path:
        raise ValueError(f"--ssh {text}: expected ID or ID=SOCKET")
    if "," in path:
        raise ValueError(f"--ssh {text}: one socket per id")
    return SshSource(ident, path or None)
