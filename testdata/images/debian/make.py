"""A Debian 12 base image from Debian's own packages, and a local apt repository to install from
without leaving 127.0.0.1, for the conformance cases and tests that run apt and pip.

    python3 testdata/images/debian/make.py prepare [DIR]
    python3 testdata/images/debian/make.py image [DIR] OUT.tar [--tag debian:test ...]
        [--imported-tag debian-nopath:test ...]

`prepare` (as root; .ci/setup runs it) needs the Debian mirror, debootstrap and dpkg-dev. It
runs `debootstrap --variant=minbase --include=python3-pip bookworm DIR/rootfs`, downloads the
.deb files of PACKAGES (jq and the libraries it needs that minbase lacks) into DIR/repo, a flat
repository (`Packages` from dpkg-scanpackages, `Release` with its digests) to serve over http
with `deb [trusted=yes] http://127.0.0.1:PORT/ ./`, then makes the root look like Docker's
`debian:bookworm-slim` image: no apt lists, caches or .deb files, no documentation, manual
pages or translations (and a dpkg.cfg.d file that keeps later installs so), Docker's
apt.conf.d/docker-clean, no /dev nodes, no hostname, resolv.conf or bootstrap log, and an apt
source list with no source in it (so an apt-get run by mistake reaches nothing). It does nothing
when DIR/READY says the same recipe already ran; a failed run leaves no DIR/READY. DIR defaults
to $PYBUILD_DEBIAN_DATA, else /var/cache/pybuild-testdata/debian.

`image` (standard library only, as root: the root holds files only root may read) writes a
`docker save` tarball of DIR/rootfs as one layer (entries sorted, owner names empty, hardlinks
kept, times as in the root). `--tag` images (default debian:test) have Docker's `debian`
config: `Env PATH=...`, `Cmd ["bash"]`; `--imported-tag` ones have an empty config, as
`docker import` makes it (no Env, so no PATH). Both share the layer.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from archive import Entry, Image, check_tag, docker_save, tar_bytes, write_atomically  # noqa: E402

RECIPE = 2  # bump when what `prepare` makes changes: DIR is made again
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
INCLUDE = "python3-pip"
PACKAGES = ("jq", "libjq1", "libonig5")
DEFAULT_DIR = os.environ.get("PYBUILD_DEBIAN_DATA", "/var/cache/pybuild-testdata/debian")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# What debuerreotype puts in Docker's debian images: apt removes what it downloaded.
REMOVE_DEBS = ('"rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb '
               '/var/cache/apt/*.bin || true"')
DOCKER_CLEAN = (f"DPkg::Post-Invoke {{ {REMOVE_DEBS}; }};\n"
                f"APT::Update::Post-Invoke {{ {REMOVE_DEBS}; }};\n\n"
                'Dir::Cache::pkgcache "";\nDir::Cache::srcpkgcache "";\n')
SOURCES = "# no source: the tests write their own (a local repository on 127.0.0.1)\n"
# What debuerreotype leaves out of Docker's debian:*-slim images (its slimify excludes): dpkg
# installs none of it, in the image's own later installs too.
SLIM_EXCLUDED = ("usr/share/doc", "usr/share/groff", "usr/share/info", "usr/share/linda",
                 "usr/share/lintian/overrides", "usr/share/locale", "usr/share/man")
SLIM = "".join(f"path-exclude /{path}/*\n" for path in SLIM_EXCLUDED) + \
    "path-include /usr/share/doc/*/copyright\n"
# made by debootstrap for the host it ran on, or volatile: not part of the image
DROPPED = ("etc/hostname", "etc/resolv.conf", "var/log/bootstrap.log",
           "var/cache/apt/pkgcache.bin", "var/cache/apt/srcpkgcache.bin")


def fail(msg: str) -> None:
    raise SystemExit(f"make.py: {msg}")


def recipe() -> dict:
    return {"recipe": RECIPE, "suite": SUITE, "include": INCLUDE, "packages": list(PACKAGES)}


def ready(directory: str) -> dict | None:
    """What DIR/READY says was made, if the current recipe made it."""
    try:
        with open(os.path.join(directory, "READY")) as f:
            made = json.load(f)
    except (OSError, ValueError):
        return None
    return made if {k: made.get(k) for k in recipe()} == recipe() else None


def prepare(directory: str) -> None:
    if ready(directory):
        return
    for tool in ("debootstrap", "dpkg-scanpackages"):
        if not shutil.which(tool):
            fail(f"{tool} not found (on Debian: apt-get install debootstrap dpkg-dev)")
    partial = directory + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    rootfs, repo = os.path.join(partial, "rootfs"), os.path.join(partial, "repo")
    os.makedirs(repo)
    subprocess.run(["debootstrap", "--variant=minbase", f"--include={INCLUDE}", SUITE, rootfs,
                    os.environ.get("DEBIAN_MIRROR", MIRROR)], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["chroot", rootfs, "sh", "-c", "cd /tmp && apt-get -q -o "
                    'APT::Sandbox::User=root download "$@" >/dev/null', "sh", *PACKAGES],
                   check=True)
    for name in os.listdir(os.path.join(rootfs, "tmp")):
        if name.endswith(".deb"):
            shutil.move(os.path.join(rootfs, "tmp", name), repo)
    index(repo)
    architecture = subprocess.run(["chroot", rootfs, "dpkg", "--print-architecture"], check=True,
                                  capture_output=True, text=True).stdout.strip()
    clean(rootfs)
    with open(os.path.join(partial, "READY"), "w") as f:
        json.dump({**recipe(), "architecture": architecture,
                   "debs": sorted(n for n in os.listdir(repo) if n.endswith(".deb"))}, f)
    shutil.rmtree(directory, ignore_errors=True)
    os.rename(partial, directory)


def index(repo: str) -> None:
    """A flat repository's Packages and a Release naming its digests (apt wants one even for a
    [trusted=yes] source)."""
    packages = subprocess.run(["dpkg-scanpackages", "--multiversion", "."], cwd=repo, check=True,
                              capture_output=True).stdout
    with open(os.path.join(repo, "Packages"), "wb") as f:
        f.write(packages)
    with open(os.path.join(repo, "Release"), "w") as f:
        f.write(f"Suite: local\nSHA256:\n {hashlib.sha256(packages).hexdigest()} "
                f"{len(packages)} Packages\n")


def clean(rootfs: str) -> None:
    """What debootstrap leaves that Docker's debian:bookworm-slim has not, removed; its apt and
    dpkg configuration added."""
    for pattern_dir, keep in (("var/cache/apt/archives", {"partial", "lock"}),
                              ("var/lib/apt/lists", {"partial", "lock"}), ("dev", set())):
        top = os.path.join(rootfs, pattern_dir)
        for name in set(os.listdir(top)) - keep:
            path = os.path.join(top, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
    for path in DROPPED:
        if os.path.lexists(os.path.join(rootfs, path)):
            os.unlink(os.path.join(rootfs, path))
    for path in SLIM_EXCLUDED:
        top = os.path.join(rootfs, path)
        for directory, dirs, files in os.walk(top, topdown=False):
            for name in files:
                if not (name == "copyright" and os.path.dirname(directory) == os.path.join(
                        rootfs, "usr/share/doc")):
                    os.unlink(os.path.join(directory, name))
            if directory != top and not os.listdir(directory):
                os.rmdir(directory)
    for path, text in (("etc/apt/apt.conf.d/docker-clean", DOCKER_CLEAN),
                       ("etc/apt/sources.list", SOURCES),
                       ("etc/dpkg/dpkg.cfg.d/docker-slim", SLIM)):
        with open(os.path.join(rootfs, path), "w") as f:
            f.write(text)
        os.chmod(os.path.join(rootfs, path), 0o644)


def layer(rootfs: str) -> bytes:
    """The root as one layer: regular files read whole, a hardlink's later names as links to
    its first (in entry order). Extended attributes (file capabilities) are refused, not
    dropped: minbase and python3-pip set none."""
    names = []
    for directory, dirs, files in os.walk(rootfs):
        names += [os.path.relpath(os.path.join(directory, n), rootfs) for n in dirs + files]
    entries: list[Entry] = []
    first: dict[tuple[int, int], str] = {}
    with tarfile.open(os.devnull, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(names, key=lambda n: n.split("/")):
            path = os.path.join(rootfs, name)
            st = os.lstat(path)
            if os.listxattr(path, follow_symlinks=False):
                fail(f"{path} has extended attributes, which this recipe does not carry")
            info = tar.gettarinfo(path, name)
            info.uname = info.gname = ""
            data = None
            if stat.S_ISREG(st.st_mode):
                inode = (st.st_dev, st.st_ino)
                if st.st_nlink > 1 and inode in first:
                    info.type, info.linkname, info.size = tarfile.LNKTYPE, first[inode], 0
                else:
                    first[inode] = name
                    with open(path, "rb") as f:
                        data = f.read()
            entries.append((info, data))
    return tar_bytes(entries)


def image(directory: str, out: str, tags: list[str], imported_tags: list[str]) -> None:
    made = ready(directory)
    if made is None:
        fail(f"{directory} was not prepared by this recipe: run `make.py prepare {directory}` "
             "(as root, with the Debian mirror reachable)")
    images = [Image({"Env": [f"PATH={PATH}"], "Cmd": ["bash"]}, tuple(tags),
                    "testdata/images/debian/make.py", f"debootstrap {SUITE} minbase")]
    if imported_tags:
        images.append(Image({}, tuple(imported_tags), "testdata/images/debian/make.py --imported",
                            f"debootstrap {SUITE} minbase"))
    write_atomically(out, docker_save(layer(os.path.join(directory, "rootfs")), images,
                                      made["architecture"], 0))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="A Debian base image and a local apt repository.")
    verbs = ap.add_subparsers(dest="verb", required=True)
    verb = verbs.add_parser("prepare", help="debootstrap the root and fill the repository")
    verb.add_argument("dir", nargs="?", default=DEFAULT_DIR)
    verb = verbs.add_parser("image", help="a docker-save tarball of the prepared root")
    verb.add_argument("dir", nargs="?", default=DEFAULT_DIR)
    verb.add_argument("out")
    verb.add_argument("--tag", action="append", default=[])
    verb.add_argument("--imported-tag", action="append", default=[])
    args = ap.parse_args(argv)
    if args.verb == "prepare":
        prepare(os.path.abspath(args.dir))
        return 0
    tags = args.tag or ["debian:test"]
    for problem in filter(None, map(check_tag, tags + args.imported_tag)):
        fail(problem)
    image(args.dir, args.out, tags, args.imported_tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
