"""The namespaces sandbox against the real kernel: isolation, exit status, what lands in upper."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

from builder.sandbox.spec import RunSpec
from builder.sandbox.namespaces import NamespaceSandbox, probe
from tests.support import interrupted_after, require

BUSYBOX = shutil.which("busybox") or "/bin/busybox"


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A lowerdir with busybox and its applets, /etc with passwd and group, /tmp."""
    usable, reason = probe()
    require(usable, f"the namespaces sandbox ({reason})")
    require(os.path.exists(BUSYBOX), "busybox-static")
    root = tmp_path_factory.mktemp("base")
    (root / "bin").mkdir()
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            os.symlink("busybox", root / "bin" / applet)
    (root / "etc").mkdir()
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\napp:x:1000:\n")
    (root / "tmp").mkdir(mode=0o1777)
    os.chmod(root / "tmp", 0o1777)
    (root / "data").mkdir()
    (root / "data" / "lower.txt").write_text("lower\n")
    (root / "data" / "sub").mkdir()
    (root / "data" / "sub" / "inner.txt").write_text("inner\n")
    return root


def run(base: Path, tmp_path: Path, script: str, **options) -> tuple[int, str, Path]:
    scratch = tmp_path / "scratch"
    upper, work = scratch / "upper", scratch / "work"
    upper.mkdir(parents=True)
    work.mkdir()
    chunks: list[bytes] = []
    spec = RunSpec(lowerdirs=(str(base),), upperdir=str(upper), workdir=str(work),
                   scratch=str(scratch), argv=("/bin/sh", "-c", script),
                   env=("PATH=/bin", "HOME=/root"), **options)
    status = NamespaceSandbox().run(spec, chunks.append)
    return status, b"".join(chunks).decode(), upper


@pytest.mark.parametrize("script, status", [("true", 0), ("exit 3", 3), ("no-such-command", 127),
                                            ("kill -9 $$", 137)])
def test_exit_status(base, tmp_path, script, status):
    assert run(base, tmp_path, script)[0] == status


def test_output_streams_in_order(base, tmp_path):
    status, output, _ = run(base, tmp_path, "echo one; echo two >&2; echo three")
    assert (status, output) == (0, "one\ntwo\nthree\n")


def test_pid_namespace_hides_host_processes(base, tmp_path):
    _, output, _ = run(base, tmp_path, "echo $$; ls /proc | grep -c '^[0-9]'")
    pid, count = output.split()
    assert pid == "2"
    assert int(count) <= 4  # pid 1, the shell, ls and grep: nothing of the host


def test_hostname_and_hosts_are_buildkits(base, tmp_path):
    """BuildKit's hostname and /etc/hosts; /etc/hostname is the image's: a write reaches the layer."""
    status, output, upper = run(base, tmp_path, "hostname; cat /etc/hosts; echo mine > /etc/hostname")
    assert status == 0, output
    assert output == ("buildkitsandbox\n127.0.0.1\tlocalhost buildkitsandbox\n"
                      "::1\tlocalhost ip6-localhost ip6-loopback\n")
    assert os.uname().nodename != "buildkitsandbox"
    assert (upper / "etc" / "hostname").read_text() == "mine\n"


def test_network_none_has_only_loopback(base, tmp_path):
    _, output, _ = run(base, tmp_path, "tail -n +3 /proc/net/dev | cut -d: -f1", network="none")
    assert output.split() == ["lo"]
    _, output, _ = run(base, tmp_path / "again", "cat /sys/class/net/lo/operstate", network="none")
    assert output.strip() in ("unknown", "up")


def test_changes_land_in_upper(base, tmp_path):
    status, output, upper = run(base, tmp_path, "echo new > /data/new.txt && chown 1000:1000 /data/new.txt"
                                " && chmod 4755 /data/new.txt && rm /data/lower.txt"
                                " && rm -rf /data/sub && mkdir /data/sub && echo x > /data/sub/fresh")
    assert status == 0, output
    new = os.lstat(upper / "data" / "new.txt")
    assert (new.st_uid, new.st_gid, stat.S_IMODE(new.st_mode)) == (1000, 1000, 0o4755)
    gone = os.lstat(upper / "data" / "lower.txt")
    assert stat.S_ISCHR(gone.st_mode) and gone.st_rdev == 0
    assert os.getxattr(upper / "data" / "sub", "trusted.overlay.opaque") == b"y"
    assert sorted(os.listdir(upper / "data" / "sub")) == ["fresh"]


def test_nothing_outside_the_root_is_visible_or_writable(base, tmp_path):
    marker = tmp_path / "host-marker"
    marker.write_text("host")
    _, output, _ = run(base, tmp_path, f"ls {marker} 2>&1; echo x > /host-write && ls /")
    assert "No such file" in output
    assert not (Path("/") / "host-write").exists()


def test_the_command_is_root_of_its_own_user_namespace_only(base, tmp_path):
    """Root inside, ids mapped to themselves, and no power over what the sandbox's namespaces
    guard: no device nodes (no raw host disk), no mounts, no hostname, no host-wide /proc knobs."""
    status, output, upper = run(base, tmp_path, "cat /proc/self/uid_map /proc/self/gid_map;"
                                " chown 1000:1000 /tmp/x 2>/dev/null || touch /tmp/x && chown 1000:1000 /tmp/x;"
                                " mknod /tmp/disk b 7 0 2>&1; mount -t tmpfs none /tmp 2>&1;"
                                " hostname other 2>&1; echo 3 > /proc/sys/vm/drop_caches 2>&1;"
                                " grep -c ' /proc/sys ' /proc/mounts; hostname")
    assert status == 0, output
    lines = output.splitlines()
    assert [line.split() for line in lines[:2]] == [["0", "0", "4294967295"]] * 2
    assert "mknod: /tmp/disk: Operation not permitted" in lines
    assert "mount: permission denied (are you root?)" in lines
    assert "hostname: sethostname: Operation not permitted" in lines
    assert any("Read-only file system" in line for line in lines)  # /proc/sys
    assert lines[-2:] == ["1", "buildkitsandbox"]
    assert not (upper / "tmp" / "disk").exists()
    assert (os.lstat(upper / "tmp" / "x").st_uid, os.lstat(upper / "tmp" / "x").st_gid) == (1000, 1000)


def test_output_streams_while_the_command_runs(base, tmp_path):
    arrivals: list[float] = []
    scratch = tmp_path / "scratch"
    (scratch / "upper").mkdir(parents=True)
    (scratch / "work").mkdir()
    spec = RunSpec(lowerdirs=(str(base),), upperdir=str(scratch / "upper"),
                   workdir=str(scratch / "work"), scratch=str(scratch),
                   argv=("/bin/sh", "-c", "echo first; sleep 1; echo second"), env=("PATH=/bin",))
    status = NamespaceSandbox().run(spec, lambda chunk: arrivals.append(time.monotonic()))
    assert status == 0 and len(arrivals) == 2
    assert arrivals[1] - arrivals[0] > 0.5  # the first line came before the command slept


def test_pid_1_reaps_orphans(base, tmp_path):
    """An orphan that exits is reaped by the sandbox's pid 1: no zombie is left while the command
    runs on."""
    status, output, _ = run(base, tmp_path, "(sleep 0.2 &); sleep 1;"
                            " cat /proc/[0-9]*/stat | cut -d' ' -f3 | grep -c Z")
    assert output.strip() == "0"


def test_etc_hosts_is_read_only_and_dev_writes_vanish(base, tmp_path):
    status, output, upper = run(base, tmp_path, "echo bad >> /etc/hosts; echo ok > /dev/null;"
                                " touch /dev/extra; echo done")
    assert output.endswith("done\n")
    assert "Read-only" in output
    assert not (upper / "dev").exists()
    assert not (upper / "etc" / "hosts").exists()


def test_no_mount_point_stubs_remain(base, tmp_path):
    status, _, upper = run(base, tmp_path, "true")
    assert status == 0
    assert os.listdir(upper) == []


def test_user_and_working_directory(base, tmp_path):
    status, output, upper = run(base, tmp_path, "id -u; id -g; pwd; touch /tmp/mine", uid=1000,
                                gid=1000, cwd="/home/app/work")
    assert status == 0, output
    assert output.split() == ["1000", "1000", "/home/app/work"]
    assert os.lstat(upper / "home" / "app" / "work").st_uid == 0  # created for the run, as root
    assert os.lstat(upper / "tmp" / "mine").st_uid == 1000


def test_orphans_die_with_the_command(base, tmp_path):
    status, _, _ = run(base, tmp_path, "sleep 6011 & echo started")
    assert status == 0
    leftover = subprocess.run(["pgrep", "-f", "sleep 6011"], capture_output=True, text=True).stdout
    assert leftover == ""


def test_interrupt_kills_the_sandbox_and_leaves_no_mounts(base, tmp_path):
    with interrupted_after(1.0), pytest.raises(KeyboardInterrupt):
        run(base, tmp_path, "sleep 3017")
    assert subprocess.run(["pgrep", "-f", "sleep 3017"], capture_output=True).stdout == b""
    with open("/proc/self/mountinfo") as mounts:
        assert str(tmp_path) not in mounts.read()


@pytest.mark.parametrize("network", ["host", "none"])
def test_sys_is_read_only_all_the_way_down(base, tmp_path, network):
    _, output, _ = run(base, tmp_path, "touch /sys/fs/cgroup/x 2>&1; grep -c ' /sys' /proc/mounts",
                       network=network)
    assert "Read-only" in output or "No such file" in output
    assert output.strip().splitlines()[-1] == "1"
