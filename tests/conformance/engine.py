"""The real Docker engine as the harness uses it: build (the CLI, for BuildKit), load, and
capture an image as data — the config fields that matter and the exported root filesystem,
entry by entry (the Engine API)."""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tarfile
import uuid
from dataclasses import dataclass

from tests.conformance import api
from tests.support import DOCKER

CONFIG_FIELDS = ("Env", "Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts", "Volumes",
                 "Labels", "StopSignal", "Healthcheck", "OnBuild", "Shell")
# Recorded and reported, never counted: Linux ignores ArgsEscaped (Docker sets it for shell
# forms, pybuild does not).
INFO_FIELDS = ("ArgsEscaped",)
# What `docker create` + `docker export` add or mask (the container's init layer), found by
# exporting a FROM scratch image of one file. /etc keeps the image's own metadata: compared.
INIT_LAYER = frozenset({".dockerenv", "etc/hostname", "etc/hosts", "etc/resolv.conf",
                        "etc/mtab", "dev", "dev/console", "dev/pts", "dev/shm", "proc", "sys"})
# The daemon, not the build, failed: such a result is never cached nor counted as an error case.
# Cases build offline, so a registry request means a base image was missing from the daemon
# (another test may have removed it meanwhile).
INFRASTRUCTURE = re.compile(r"Cannot connect to the Docker daemon|Is the docker daemon running|"
                            r"error during connect|no space left on device|"
                            r"failed to do request|dial tcp", re.IGNORECASE)


class EngineError(RuntimeError):
    """Docker could not do what the harness asked of it."""


@dataclass(frozen=True)
class Ran:
    returncode: int
    output: str  # stdout and stderr together, as a user would read them


def run(command: list[str], timeout: int = 300, env: dict | None = None,
        cwd: str | None = None) -> Ran:
    """A command's status and output; a timeout is status 124, as timeout(1) reports it."""
    try:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=timeout, env=env, cwd=cwd)
        return Ran(done.returncode, done.stdout.decode(errors="replace"))
    except subprocess.TimeoutExpired as expired:
        return Ran(124, (expired.stdout or b"").decode(errors="replace") + f"\n[timed out after {timeout}s]")


def server_version() -> str:
    try:
        return api.call("GET", "/version", timeout=60)["Version"]
    except (api.ApiError, OSError, KeyError) as error:
        raise EngineError(f"no Docker engine answers on {api.socket_path()}: {error}") from None


def build(builder: str, dockerfile: str, context: str, tag: str, build_args: dict[str, str],
          target: str | None, network: str, secrets: dict[str, str], timeout: int) -> Ran:
    """`docker build` with BuildKit (or the legacy builder), uncached, without network."""
    command = [DOCKER, "build", "--no-cache", "--network", network, "-f", dockerfile, "-t", tag]
    command += ["--progress", "plain"] if builder == "buildkit" else ["--force-rm"]
    for key, source in secrets.items():
        command += ["--secret", f"id={key},src={source}"]
    for key, value in build_args.items():
        command += ["--build-arg", f"{key}={value}"]
    if target:
        command += ["--target", target]
    env = dict(os.environ, DOCKER_BUILDKIT="1" if builder == "buildkit" else "0")
    ran = run([*command, context], timeout=timeout, env=env)
    if ran.returncode != 0 and INFRASTRUCTURE.search(ran.output):
        raise EngineError(f"docker build hit an infrastructure error: {ran.output[-300:]}")
    return ran


def load(tarball: str, timeout: int) -> list[str]:
    """`docker load` a tarball; the names it loaded."""
    try:
        with open(tarball, "rb") as body, api.request(
                "POST", "/images/load", {"quiet": "1"}, body,
                {"Content-Type": "application/x-tar"}, timeout) as response:
            messages = [json.loads(line) for line in response.read().splitlines() if line.strip()]
    except (api.ApiError, OSError) as error:
        raise EngineError(f"docker load failed: {error}") from None
    if errors := [m.get("error") for m in messages if m.get("error")]:
        raise EngineError(f"docker load failed: {errors[-1]}")
    output = "".join(m.get("stream", "") for m in messages)
    loaded = re.findall(r"Loaded image(?: ID)?: (\S+)", output)
    if not loaded:
        raise EngineError(f"docker load loaded nothing: {output.strip()[-300:]}")
    return loaded


def exists(name: str) -> bool:
    try:
        api.call("GET", f"/images/{api.name(name)}/json", timeout=60)
        return True
    except api.ApiError:
        return False


def remove(*names: str) -> None:
    for name in names:
        try:
            api.call("DELETE", f"/images/{api.name(name)}", timeout=120)
        except api.ApiError:
            pass  # already gone: nothing of ours is left


def capture(name: str) -> dict:
    """The image as data: {"config": {field: value}, "info": {...}, "layers": n, "fs": {path: entry}}."""
    try:
        image = api.call("GET", f"/images/{api.name(name)}/json", timeout=120)
        config = image.get("Config") or {}
        container = api.call("POST", "/containers/create",
                             {"name": f"conformance-{uuid.uuid4().hex[:12]}"},
                             {"Image": name, "Cmd": ["/conformance-noop"]}, timeout=120)["Id"]
    except (api.ApiError, OSError) as error:
        raise EngineError(f"cannot inspect or create {name}: {error}") from None
    try:
        fs = exported_files(container)
    finally:
        api.call("DELETE", f"/containers/{container}", {"v": "1", "force": "1"}, timeout=120)
    return {"config": {key: config.get(key) for key in CONFIG_FIELDS},
            "info": {key: config.get(key) for key in INFO_FIELDS},
            "layers": len((image.get("RootFS") or {}).get("Layers") or ()), "fs": fs}


def exported_files(container: str) -> dict[str, dict]:
    """`docker export` read as a stream: path -> type, mode, owner, size and digest, symlink
    target, device numbers, xattrs; every member of a hardlink group lists the whole group."""
    entries: dict[str, dict] = {}
    links: list[tuple[str, str]] = []
    try:
        with api.request("GET", f"/containers/{container}/export") as response, \
                tarfile.open(fileobj=response, mode="r|", errors="surrogateescape") as tar:
            for member in tar:
                path = _normal(member.name)
                if path in INIT_LAYER:
                    continue
                if member.islnk():
                    links.append((path, _normal(member.linkname)))
                    continue
                entries[path] = _entry(tar, member)
    except (api.ApiError, OSError, tarfile.TarError) as error:
        raise EngineError(f"docker export failed: {error}") from None
    groups: dict[str, list[str]] = {}
    for path, target in links:
        if target not in entries:
            raise EngineError(f"docker export: hardlink {path} to {target}, which it did not list")
        entries[path] = dict(entries[target])
        groups.setdefault(target, [target]).append(path)
    for members in groups.values():
        for path in members:
            entries[path]["hardlinks"] = sorted(members)
    return entries


def _entry(tar: tarfile.TarFile, member: tarfile.TarInfo) -> dict:
    entry: dict = {"mode": oct(member.mode & 0o7777), "uid": member.uid, "gid": member.gid}
    if member.isreg():
        digest, size, body = hashlib.sha256(), 0, tar.extractfile(member)
        while chunk := body.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
        entry.update(type="file", size=size, sha256=digest.hexdigest())
    elif member.isdir():
        entry["type"] = "dir"
    elif member.issym():
        entry.update(type="symlink", target=member.linkname)
    elif member.ischr() or member.isblk():
        entry.update(type="chardev" if member.ischr() else "blockdev",
                     dev=[member.devmajor, member.devminor])
    elif member.isfifo():
        entry["type"] = "fifo"
    else:
        entry["type"] = f"other {member.type!r}"
    xattrs = {key[len("SCHILY.xattr."):]: value for key, value in member.pax_headers.items()
              if key.startswith("SCHILY.xattr.")}
    if xattrs:
        entry["xattrs"] = xattrs
    return entry


def _normal(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.strip("/") or "."


def archive_tags(tarball: str) -> list[str]:
    """The RepoTags of a docker-save archive's manifest.json (what `docker load` of Docker 20.10
    needs: an OCI layout alone is refused)."""
    try:
        with tarfile.open(tarball) as tar:
            manifest = json.load(tar.extractfile("manifest.json"))
    except KeyError:
        raise EngineError("the tarball has no manifest.json (docker load of Docker 20.10 "
                          "needs the docker-save layout)") from None
    except (tarfile.TarError, OSError, ValueError) as error:
        raise EngineError(f"cannot read the tarball: {error}") from None
    return [tag for entry in manifest for tag in entry.get("RepoTags") or ()]
