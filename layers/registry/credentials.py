"""Registry credentials as `docker login` leaves them: `$DOCKER_CONFIG/config.json` (default
`~/.docker/config.json`), its `auths` entries, and the credential helpers it names.

A registry's helper (`credHelpers[host]`, else `credsStore`) is asked first, as Docker does; when
it knows nothing, the `auths` entry is used. Entries are found under any spelling Docker and older
tools wrote: `host`, `https://host`, `http://host/v1/`, and Docker Hub's historical
`https://index.docker.io/v1/`.
"""
from __future__ import annotations

import base64
import binascii
import json
import os
import subprocess
from dataclasses import dataclass, field
from typing import Any

from layers.registry.errors import RegistryError

DOCKER_HUB_KEY = "https://index.docker.io/v1/"
_DOCKER_HUB_HOSTS = ("docker.io", "index.docker.io", "registry-1.docker.io")
_HELPER_TIMEOUT = 60


@dataclass(frozen=True)
class Credentials:
    """A user name and password, or an identity token (an OAuth2 refresh token). Secrets are
    left out of repr, so a logged or printed Credentials shows none."""

    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)


def credentials_for(registry: str, config_dir: str | None = None) -> Credentials | None:
    """The credentials stored for `registry` (a host[:port], `docker.io` for Docker Hub), or None
    when there are none: the registry is then used anonymously."""
    directory = config_dir or os.environ.get("DOCKER_CONFIG") or os.path.expanduser("~/.docker")
    path = os.path.join(directory, "config.json")
    try:
        with open(path, "rb") as handle:
            config = json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise RegistryError(f"cannot read {path}: {error.__class__.__name__}") from None
    if not isinstance(config, dict):
        raise RegistryError(f"cannot read {path}: not a JSON object")
    hosts = _DOCKER_HUB_HOSTS if registry in _DOCKER_HUB_HOSTS else (registry,)
    helpers = config.get("credHelpers")
    helpers = helpers if isinstance(helpers, dict) else {}
    helper = next((helpers[h] for h in hosts if helpers.get(h)), None) or config.get("credsStore")
    server = DOCKER_HUB_KEY if registry in _DOCKER_HUB_HOSTS else registry
    found = _from_helper(helper, server) if helper else None
    return found or _from_auths(config.get("auths"), hosts, path)


def _from_auths(auths: Any, hosts: tuple[str, ...], path: str) -> Credentials | None:
    if not isinstance(auths, dict):
        return None
    keys = [key for key in auths if _hostname(key) in hosts]
    # An exact bare-host key wins over the URL spellings, as in Docker's own lookup.
    keys.sort(key=lambda key: key not in hosts)
    for key in keys:
        entry = auths[key]
        if isinstance(entry, dict) and (found := _from_entry(entry, key, path)):
            return found
    return None


def _from_entry(entry: dict[str, Any], key: str, path: str) -> Credentials | None:
    username, password = entry.get("username") or "", entry.get("password") or ""
    if entry.get("auth"):
        try:
            username, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError, TypeError):
            raise RegistryError(f"{path}: the auth of {key!r} is not base64 user:password") \
                from None
    token = entry.get("identitytoken") or ""
    if not (username or password or token):
        return None
    return Credentials(username, password if not token else "", token)


def _hostname(key: str) -> str:
    """`https://host:5000/v1/` -> `host:5000`."""
    return key.split("://", 1)[-1].split("/", 1)[0]


def _from_helper(suffix: str, server: str) -> Credentials | None:
    """Ask `docker-credential-<suffix> get`; None when it has nothing for `server`."""
    program = f"docker-credential-{suffix}"
    try:
        process = subprocess.run([program, "get"], input=server.encode(), capture_output=True,
                                 timeout=_HELPER_TIMEOUT)
    except FileNotFoundError:
        raise RegistryError(f"{program} (named in config.json) is not on PATH") from None
    except subprocess.TimeoutExpired:
        raise RegistryError(f"{program} get did not answer in {_HELPER_TIMEOUT} s") from None
    if process.returncode != 0:
        message = process.stdout.decode(errors="replace").strip()
        if "credentials not found" in message.lower():
            return None
        # The helper's first stderr line is its error; the rest of its output is not shown.
        reason = (process.stderr.decode(errors="replace").strip().splitlines() or [message])[0]
        raise RegistryError(f"{program} get failed for {server}: {reason}")
    try:
        answer = json.loads(process.stdout)
        username, secret = answer.get("Username") or "", answer.get("Secret") or ""
    except (ValueError, AttributeError):
        raise RegistryError(f"{program} get answered something that is not its JSON") from None
    if username == "<token>":
        return Credentials(identity_token=secret)
    return Credentials(username, secret) if username or secret else None
