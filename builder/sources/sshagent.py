"""The ssh-agent sockets RUN --mount=type=ssh forwards: a socket given to `--ssh`, or, for private
key files (`--ssh ID=KEY[,KEY...]`), an agent of the build's own, as buildx loads keys.

Such an agent is OpenSSH's `ssh-agent`, started on the first RUN that mounts its id, listening
on a socket in a directory only its user can enter, with the keys added by `ssh-add`. It lives
until the build ends, however it ends (`close`, and the kernel ends it should pybuild be killed).
A key's content goes nowhere but into that agent.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time

from builder.sources.secrets import SshSource

_START_SECONDS = 10


class SshAgents:
    """The agents started for one build, by id; `socket(id)` starts one on first use."""

    def __init__(self, sources: dict[str, SshSource]) -> None:
        self.sources = sources
        self._started: dict[str, tuple[subprocess.Popen, str]] = {}

    def socket(self, ident: str) -> str | None:
        """The socket forwarded for `ident`; None when nothing is given for it (or the given
        socket is missing). Raises ValueError when keys cannot be loaded."""
        source = self.sources.get(ident)
        if source is None:
            return None
        keys = source.keys()
        if not keys:
            return source.socket()
        if ident not in self._started:
            self._started[ident] = _start(source.id, keys)
        return os.path.join(self._started[ident][1], "agent.sock")

    def close(self) -> None:
        """Stop every agent started and remove its socket's directory."""
        started, self._started = self._started, {}
        for process, directory in started.values():
            _stop(process, directory)


def _start(ident: str, keys: tuple[str, ...]) -> tuple[subprocess.Popen, str]:
    for key in keys:
        if not os.path.isfile(key):
            raise ValueError(f"--ssh {ident}={key}: neither a key file nor an agent socket")
    if shutil.which("ssh-agent") is None or shutil.which("ssh-add") is None:
        raise ValueError(f"--ssh {ident}: loading key files needs ssh-agent and ssh-add "
                         "(OpenSSH's client, Debian's openssh-client)")
    # Under /tmp, not the cache root: a socket's path must fit in 108 bytes.
    directory = tempfile.mkdtemp(prefix="pybuild-ssh-")
    socket = os.path.join(directory, "agent.sock")
    from builder.sandbox.linux import die_with_parent
    process = subprocess.Popen(["ssh-agent", "-D", "-a", socket], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               preexec_fn=lambda: die_with_parent(signal.SIGTERM))
    try:
        _wait_for(process, socket, ident)
        added = subprocess.run(["ssh-add", "-q", "--", *keys], stdin=subprocess.DEVNULL,
                               capture_output=True, text=True, timeout=30,
                               env=_agent_env(socket))
        if added.returncode != 0:
            why = added.stderr.strip() or f"exit status {added.returncode}"
            raise ValueError(f"--ssh {ident}: ssh-add could not load {', '.join(keys)} "
                             f"({why}; a key with a passphrase must be loaded into your own "
                             "agent and forwarded with --ssh ID=$SSH_AUTH_SOCK)")
    except BaseException:
        _stop(process, directory)
        raise
    return process, directory


def _wait_for(process: subprocess.Popen, socket: str, ident: str) -> None:
    deadline = time.monotonic() + _START_SECONDS
    while not os.path.exists(socket):
        if process.poll() is not None:
            why = process.stderr.read().decode(errors="replace").strip()
            raise ValueError(f"--ssh {ident}: ssh-agent did not start ({why})")
        if time.monotonic() > deadline:
            raise ValueError(f"--ssh {ident}: ssh-agent made no socket in {_START_SECONDS}s")
        time.sleep(0.01)


def _agent_env(socket: str) -> dict[str, str]:
    """ssh-add's environment: this agent, and never a prompt for a passphrase."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "SSH_ASKPASS")}
    return env | {"SSH_AUTH_SOCK": socket, "SSH_ASKPASS_REQUIRE": "never"}


def _stop(process: subprocess.Popen, directory: str) -> None:
    process.terminate()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    process.stderr.close()
    shutil.rmtree(directory, ignore_errors=True)
