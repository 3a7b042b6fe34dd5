"""Make a small busybox base image, offline, as a `docker save`-style tarball.

    python3 testdata/images/busybox/make.py OUT.tar [--tag busybox:test ...]
        [--busybox /bin/busybox] [--mtime 0] [--imported]

Needs only Python 3 (stdlib) and a *statically linked* busybox: on Debian 12,
`apt-get install busybox-static` (it installs /bin/busybox). Nothing is downloaded.

The tarball holds `manifest.json`, `repositories`, the image config `<sha256>.json` and one
uncompressed layer `<diff-id hex>/layer.tar`; `docker load -i OUT.tar` accepts it (checked
with Docker 20.10), and so does `pybuild load -i OUT.tar`. The bytes are deterministic for a given
busybox binary, tags and --mtime: every entry has the same mtime, owner names are empty, and
entries are sorted with parents before children.

The root filesystem:

    /bin/busybox                  the host's busybox, 0755
    /<applet path> -> /bin/busybox one absolute symlink per line of `busybox --list-full`
                                  (/bin/sh, /usr/bin/id, /sbin/..., /linuxrc); busybox picks the
                                  applet from argv[0], so shell-form and exec-form RUNs work
    /etc/passwd                   root 0:0, app 1000:1000 (/home/app), nobody 65534:65534
    /etc/group                    root 0, staff 50 (members: app), app 1000, nogroup 65534
    /tmp 1777, /root 0700, /home/app 0755 owned by 1000:1000, /var, /usr/{bin,sbin}, /sbin

and the config: `Env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`,
`Cmd ["sh"]`, os linux, architecture from the busybox binary's ELF header, `created` at
--mtime.

--tag may be given several times (default busybox:test); --mtime is the Unix time given to
every entry and to `created` (default 0, i.e. 1970-01-01T00:00:00Z). --imported leaves the
config empty, as `docker import` makes it: no Env (so no PATH), no Cmd.
"""
from __future__ import annotations

import argparse
import os
import struct
import subprocess
import sys
import tarfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from archive import Image, check_tag, docker_save, entry, tar_bytes, write_atomically  # noqa: E402

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
app:x:1000:1000:app:/home/app:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""

GROUP = """\
root:x:0:
staff:x:50:app
app:x:1000:
nogroup:x:65534:
"""

# (path, mode, uid, gid) of the directories, besides the parents of applet links
DIRS = [
    ("bin", 0o755, 0, 0),
    ("etc", 0o755, 0, 0),
    ("home", 0o755, 0, 0),
    ("home/app", 0o755, 1000, 1000),
    ("root", 0o700, 0, 0),
    ("sbin", 0o755, 0, 0),
    ("tmp", 0o1777, 0, 0),
    ("usr", 0o755, 0, 0),
    ("usr/bin", 0o755, 0, 0),
    ("usr/sbin", 0o755, 0, 0),
    ("var", 0o755, 0, 0),
]

# ELF e_machine -> OCI architecture
ELF_ARCH = {0x3E: "amd64", 0xB7: "arm64", 0x28: "arm", 0x03: "386", 0x15: "ppc64le",
            0x16: "s390x", 0xF3: "riscv64", 0x08: "mips64le"}


def fail(msg: str) -> None:
    raise SystemExit(f"make.py: {msg}")


def elf_info(data: bytes) -> tuple[str, bool]:
    """(architecture, statically linked) of an ELF executable."""
    if data[:4] != b"\x7fELF":
        fail("busybox is not an ELF executable")
    is64, little = data[4] == 2, data[5] == 1
    e = "<" if little else ">"
    machine = struct.unpack_from(e + "H", data, 18)[0]
    if is64:
        phoff, = struct.unpack_from(e + "Q", data, 32)
        phentsize, phnum = struct.unpack_from(e + "HH", data, 54)
    else:
        phoff, = struct.unpack_from(e + "I", data, 28)
        phentsize, phnum = struct.unpack_from(e + "HH", data, 42)
    interp = any(struct.unpack_from(e + "I", data, phoff + i * phentsize)[0] == 3  # PT_INTERP
                 for i in range(phnum))
    return ELF_ARCH.get(machine, f"elf-machine-{machine}"), not interp


def applet_paths(busybox: str) -> list[str]:
    out = subprocess.run([busybox, "--list-full"], check=True, capture_output=True,
                         text=True).stdout
    paths = sorted({p.strip().strip("/") for p in out.splitlines() if p.strip()})
    if "bin/sh" not in paths:
        fail(f"{busybox} --list-full has no bin/sh")
    return [p for p in paths if p != "bin/busybox"]


def make_layer(busybox: bytes, applets: list[str], mtime: int) -> bytes:
    entries = [entry(p, tarfile.DIRTYPE, m, mtime, u, g) for p, m, u, g in DIRS]
    known = {p for p, *_ in DIRS}
    for path in applets:  # any parent not listed above
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in known:
                known.add(d)
                entries.append(entry(d, tarfile.DIRTYPE, 0o755, mtime))
    entries.append(entry("bin/busybox", tarfile.REGTYPE, 0o755, mtime, data=busybox))
    entries += [entry(p, tarfile.SYMTYPE, 0o777, mtime, linkname="/bin/busybox")
                for p in applets]
    entries.append(entry("etc/passwd", tarfile.REGTYPE, 0o644, mtime, data=PASSWD.encode()))
    entries.append(entry("etc/group", tarfile.REGTYPE, 0o644, mtime, data=GROUP.encode()))
    return tar_bytes(entries)


def make_archive(busybox_path: str, tags: list[str], mtime: int, imported: bool = False) -> bytes:
    with open(busybox_path, "rb") as f:
        busybox = f.read()
    arch, static = elf_info(busybox)
    if not static:
        fail(f"{busybox_path} is dynamically linked; install busybox-static")
    version = subprocess.run([busybox_path], check=False, capture_output=True, text=True).stdout
    version = version.splitlines()[0].strip() if version else "BusyBox"
    layer = make_layer(busybox, applet_paths(busybox_path), mtime)
    config = {} if imported else {"Env": [f"PATH={PATH}"], "Cmd": ["sh"]}
    image = Image(config, tuple(tags), "testdata/images/busybox/make.py", version)
    return docker_save(layer, [image], arch, mtime)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Make a busybox base image tarball (docker save format).")
    ap.add_argument("out", help="tarball to write")
    ap.add_argument("--tag", action="append", default=[],
                    help="name:tag for the image, repeatable (default busybox:test)")
    ap.add_argument("--busybox", default="/bin/busybox",
                    help="statically linked busybox to put in the image (default /bin/busybox)")
    ap.add_argument("--mtime", type=int, default=0,
                    help="Unix time of every entry and of the config's created (default 0)")
    ap.add_argument("--imported", action="store_true",
                    help="an empty config, as `docker import` makes it (no Env, no PATH)")
    args = ap.parse_args(argv)
    tags = args.tag or ["busybox:test"]
    for problem in filter(None, map(check_tag, tags)):
        fail(problem)
    if not os.path.isfile(args.busybox):
        fail(f"{args.busybox} not found (on Debian: apt-get install busybox-static)")
    write_atomically(args.out, make_archive(args.busybox, tags, args.mtime, args.imported))
    return 0


if __name__ == "__main__":
    sys.exit(main())
