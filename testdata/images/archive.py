"""The part the base-image recipes share (busybox/make.py, debian/make.py): deterministic tar
entries and a `docker save`-style tarball of one layer, holding one or more images.

Standard library only, so a recipe runs on a machine where pybuild is not installed. Bytes depend
only on the inputs: entries are sorted with parents before children, owner names are empty.
"""
from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
import tarfile
import tempfile
from dataclasses import dataclass

Entry = tuple[tarfile.TarInfo, bytes | None]


@dataclass(frozen=True)
class Image:
    """One image of the archive: its config's `config` object, its tags, its history comment."""
    config: dict
    tags: tuple[str, ...]
    created_by: str
    comment: str = ""


def sort_key(name: str) -> list[str]:
    return name.split("/")  # parents before children, siblings by name


def tar_bytes(entries: list[Entry]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in sorted(entries, key=lambda e: sort_key(e[0].name)):
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def entry(name: str, kind: bytes, mode: int, mtime: int, uid: int = 0, gid: int = 0,
          data: bytes | None = None, linkname: str = "") -> Entry:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime, info.uid, info.gid = kind, mode, mtime, uid, gid
    info.uname = info.gname = ""
    info.linkname = linkname
    info.size = len(data) if data is not None else 0
    return info, data


def docker_save(layer: bytes, images: list[Image], architecture: str, mtime: int) -> bytes:
    """A `docker save` tarball (manifest.json, repositories, configs, one uncompressed
    `<diff-id>/layer.tar`) of `images`, which all have `layer` as their only layer."""
    diff_id = hashlib.sha256(layer).hexdigest()
    created = datetime.datetime.fromtimestamp(mtime, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    layer_name = f"{diff_id}/layer.tar"
    files = [entry(diff_id, tarfile.DIRTYPE, 0o755, mtime),
             entry(layer_name, tarfile.REGTYPE, 0o644, mtime, data=layer)]
    manifest, repositories = [], {}
    for image in images:
        config = {
            "architecture": architecture,
            "os": "linux",
            "created": created,
            "config": image.config,
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
            "history": [{"created": created, "created_by": image.created_by,
                         **({"comment": image.comment} if image.comment else {})}],
        }
        config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
        config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
        files.append(entry(config_name, tarfile.REGTYPE, 0o644, mtime, data=config_bytes))
        manifest.append({"Config": config_name, "RepoTags": list(image.tags),
                         "Layers": [layer_name]})
        for tag in image.tags:
            repo, _, name = tag.rpartition(":")
            repositories.setdefault(repo, {})[name] = diff_id
    files += [
        entry("manifest.json", tarfile.REGTYPE, 0o644, mtime,
              data=json.dumps(manifest, separators=(",", ":")).encode()),
        entry("repositories", tarfile.REGTYPE, 0o644, mtime,
              data=json.dumps(repositories, sort_keys=True, separators=(",", ":")).encode()),
    ]
    return tar_bytes(files)


def check_tag(tag: str) -> str | None:
    """What is wrong with `tag` as a name:tag, or None."""
    repo, sep, name = tag.rpartition(":")
    return None if sep and repo and "/" not in name else f"--tag {tag!r}: want name:tag"


def write_atomically(path: str, data: bytes) -> None:
    """`data` at `path` (mode 0644) through a temporary name in the same directory."""
    out = os.path.abspath(path)
    fd, tmp = tempfile.mkstemp(prefix=".make-image-", dir=os.path.dirname(out))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        os.unlink(tmp)
        raise
