"""What a hostile RUN can reach, probed from inside real builds against canaries on the host: a
`sleep` process the test starts, a TCP server on 127.0.0.1 that records connections, a marker
file, the hostname.

Under `namespaces` (what root gets) a RUN must see none of them and change nothing of the host.
Under `chroot` the isolation is the documented weaker one (README: How RUN runs): the RUN shares
the host's process table, hostname and network and sees no processes only because no /proc is
mounted; its probes assert exactly that, and make no change to the host. The sandbox's unit
tests (tests/test_sandbox.py) check the same kernel limits without the CLI.
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from tests.support import busybox_base, pybuild

SLEEP = "31415926"

PROBES = {
    "procs": 'for p in /proc/[0-9]*; do tr "\\0" " " < $p/cmdline; echo "|"; done',
    "host-pid": "ls -d /proc/{pid}",
    "signal": "kill -0 {pid} && echo signalled",
    "kill": "kill -9 {pid} && echo killed",
    "root": "readlink /proc/self/root; ls {marker}; ls /proc/1/root{marker}",
    "sys": "touch /sys/kernel/pybuild-probe",
    "proc-sys": "echo 3 > /proc/sys/vm/drop_caches",
    "mount": "mount -t tmpfs none /tmp",
    "mknod": "mknod /tmp/null c 1 3",
    "sethostname": "hostname pybuild-evil",
    "hostname": "hostname",
    "connect": "nc 127.0.0.1 {port} < /dev/null",  # (busybox-static's wget crashes)
}
# Under chroot only what changes nothing on the host: its mount, mknod, sethostname, a kill
# and writes to /sys or /proc/sys would reach the host itself.
CHROOT_PROBES = ("procs", "signal", "root", "hostname", "connect")


class Canaries:
    """Host things a RUN must not reach: a process, a listening server, a marker file."""

    def __init__(self, directory: Path) -> None:
        self.sleeper = subprocess.Popen(["sleep", SLEEP])
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.connections = 0
        self.marker = directory / f"marker-{uuid.uuid4().hex}"
        self.marker.write_text("host")
        self.hostname = os.uname().nodename
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            connection.close()

    def connections_seen(self) -> int:
        """The count, once the accepting thread has caught up with the kernel's backlog."""
        deadline = time.monotonic() + 5
        while self.connections == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.connections

    def close(self) -> None:
        self.sleeper.kill()
        self.sleeper.wait()
        self.server.close()


def probe_build(tmp_path: Path, busybox_tar: Path, canaries: Canaries, names: tuple[str, ...],
                *options: str, control: str = "") -> dict[str, str]:
    """Build a busybox image whose RUN prints the output of the probes `names`; `control` is a
    RUN line after it. The probes' output (lines joined by spaces) by name."""
    context = tmp_path / "context"
    context.mkdir()
    script = ["probe() { echo \"PROBE $1: $(sh -c \"$2\" 2>&1 | tr '\\n' ' ')\"; }"]
    for name in names:
        command = PROBES[name].format(pid=canaries.sleeper.pid, marker=canaries.marker,
                                      port=canaries.port)
        script.append(f"probe {name} '{command}'")
    (context / "probes.sh").write_text("\n".join(script) + "\n")
    (context / "Dockerfile").write_text("FROM busybox:test\nCOPY probes.sh /\n"
                                        f"RUN sh /probes.sh\n{control}")
    env = {"PYBUILD_CACHE_DIR": str(tmp_path / "cache")}
    loaded = pybuild("load", "-i", str(busybox_tar), env=env)
    assert loaded.returncode == 0, loaded.stderr
    result = pybuild("--progress", "plain", "-o", str(tmp_path / "out.tar"), *options,
                     str(context), env=env)
    assert result.returncode == 0, result.stderr
    return dict(re.findall(r"^#\d+ \S+ PROBE ([\w-]+): ?(.*?) *$", result.stderr, re.M))


@pytest.fixture(scope="module")
def busybox_tar(tmp_path_factory) -> Path:
    return busybox_base(tmp_path_factory.mktemp("base"))


@pytest.fixture(scope="module")
def namespaces(busybox_tar, tmp_path_factory):
    """The probes under `namespaces` with `--network none`, then a RUN on the host network
    that connects to the server once: the control that shows the server counts."""
    tmp_path = tmp_path_factory.mktemp("namespaces")
    canaries = Canaries(tmp_path)
    try:
        seen = probe_build(tmp_path, busybox_tar, canaries, tuple(PROBES),
                           "--isolation", "namespaces", "--network", "none",
                           control=f"RUN --network=host nc 127.0.0.1 {canaries.port} </dev/null\n")
        yield seen, canaries, canaries.sleeper.poll(), canaries.connections_seen()
    finally:
        canaries.close()


EXPECTED = {
    "host-pid": "No such file or directory",
    "signal": "No such process",
    "kill": "No such process",
    # the marker is not in the sandbox, nor in pid 1's root (which it may not even look at)
    "root": r"^/ ls: .*marker-\w+: No such file or directory "
            r"ls: /proc/1/root/.*marker-\w+: (No such file or directory|Permission denied)$",
    "sys": "Read-only file system",
    "proc-sys": "Read-only file system",
    "mount": "permission denied",
    "mknod": "Operation not permitted",
    "sethostname": "Operation not permitted",
    "hostname": "^buildkitsandbox$",
    "connect": r"can't connect to remote host \(127.0.0.1\): Connection refused",
}


@pytest.mark.parametrize("probe", EXPECTED)
def test_namespaces_keep_a_run_from_the_host(namespaces, probe):
    seen, _, _, _ = namespaces
    assert re.search(EXPECTED[probe], seen[probe]), seen


def test_namespaces_hide_the_hosts_processes_and_spare_them(namespaces):
    seen, _, sleeper_status, _ = namespaces
    processes = seen["procs"].split("|")
    assert not any(f"sleep {SLEEP}" in p for p in processes), processes
    assert len(processes) <= 8, processes  # pid 1, the probe's shells, tr: nothing else
    assert sleeper_status is None  # still running after the build


def test_namespaces_with_network_none_reach_no_host_server(namespaces):
    _, _, _, connections = namespaces
    assert connections == 1  # the control RUN on the host network, nothing else


def test_namespaces_leave_the_hostname(namespaces):
    _, canaries, _, _ = namespaces
    assert os.uname().nodename == canaries.hostname


def test_chroot_isolates_files_only_as_documented(busybox_tar, tmp_path):
    """No /proc, so no process is seen, but the host's process can be signalled (kill -0 only)
    and the RUN has the host's hostname and network; the marker is not visible."""
    canaries = Canaries(tmp_path)
    try:
        seen = probe_build(tmp_path, busybox_tar, canaries, CHROOT_PROBES, "--isolation", "chroot")
        connections = canaries.connections_seen()
    finally:
        canaries.close()
    assert "sleep" not in seen["procs"] and "no such file" in seen["procs"].lower(), seen
    assert seen["signal"] == "signalled", seen
    assert seen["hostname"] == canaries.hostname, seen
    assert re.search(r"^ls: .*marker-\w+: No such file or directory ", seen["root"]), seen
    assert connections == 1, seen  # the host's network: the server saw the RUN
