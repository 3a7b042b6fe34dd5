"""A deliberately wrong builder for tests/test_harness.py: pybuild, then one change to the image
it wrote, so the harness has a known difference to find. The tarball is written again as a
docker-save archive, its diff IDs recomputed, so `docker load` still accepts it.

    tampering_candidate.py CHANGE [pybuild options] CONTEXT
CHANGE: none, chmod (/hello.txt becomes 0600), drop-env (ENV B is gone), add-file (/extra.txt).
"""
from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile


def chmod(config: dict, layers: list[bytes]) -> list[bytes]:
    return [_rewrite(layer, lambda member: setattr(member, "mode", 0o600)
                     if member.name.lstrip("./") == "hello.txt" else None) for layer in layers]


def drop_env(config: dict, layers: list[bytes]) -> list[bytes]:
    config["config"]["Env"] = [item for item in config["config"]["Env"] if not item.startswith("B=")]
    return layers


def add_file(config: dict, layers: list[bytes]) -> list[bytes]:
    return layers[:-1] + [_rewrite(layers[-1], lambda member: None, extra=("extra.txt", b"extra\n"))]


CHANGES = {"none": lambda config, layers: layers, "chmod": chmod, "drop-env": drop_env,
           "add-file": add_file}


def _rewrite(layer: bytes, change, extra: tuple[str, bytes] | None = None) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(layer)) as source, \
            tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as target:
        for member in source:
            change(member)
            target.addfile(member, source.extractfile(member) if member.isfile() else None)
        if extra:
            member = tarfile.TarInfo(extra[0])
            member.size, member.mode = len(extra[1]), 0o644
            target.addfile(member, io.BytesIO(extra[1]))
    return out.getvalue()


def tamper(tarball: str, change) -> None:
    with tarfile.open(tarball) as archive:
        manifest = json.load(archive.extractfile("manifest.json"))[0]
        config = json.load(archive.extractfile(manifest["Config"]))
        layers = [archive.extractfile(name).read() for name in manifest["Layers"]]
    layers = change(config, layers)
    config["rootfs"]["diff_ids"] = ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]
    config_bytes = json.dumps(config).encode()
    names = [hashlib.sha256(layer).hexdigest() + "/layer.tar" for layer in layers]
    files = {"manifest.json": json.dumps([{"Config": "config.json", "Layers": names,
                                           "RepoTags": manifest["RepoTags"]}]).encode(),
             "config.json": config_bytes, **dict(zip(names, layers))}
    with tarfile.open(tarball, "w") as archive:
        for name, data in files.items():
            member = tarfile.TarInfo(name)
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))


def main(argv: list[str]) -> int:
    change, *options = argv
    built = subprocess.run([sys.executable, "-m", "builder.cli", *options])
    if built.returncode == 0:
        tamper(options[options.index("-o") + 1], CHANGES[change])
    return built.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
