"""Image config, manifest and index: the JSON documents that name an image's layers.

All JSON is serialised one way (compact, fixed key order) because digests are taken over the
exact bytes: equal inputs must give equal image IDs.
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field, replace
from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def chain_ids(diff_ids: list[str] | tuple[str, ...]) -> list[str]:
    """ChainID(L0) = DiffID(L0); ChainID(L0..Ln) = sha256(ChainID(L0..Ln-1) + " " + DiffID(Ln))."""
    chain: list[str] = []
    for diff_id in diff_ids:
        chain.append(diff_id if not chain else sha256_digest(f"{chain[-1]} {diff_id}".encode()))
    return chain


def dumps(value: Any, indent: int | None = None) -> bytes:
    """The one serialisation of every JSON document pybuild writes (compact unless indented). A
    file name whose bytes are not UTF-8 (Python holds them as lone surrogates) cannot be UTF-8
    text: such a document is written with \\u escapes, which `json.loads` reads back to the
    very same name."""
    separators = (",", ": ") if indent else (",", ":")
    text = json.dumps(value, separators=separators, indent=indent, ensure_ascii=False)
    try:
        return text.encode()
    except UnicodeEncodeError:
        return json.dumps(value, separators=separators, indent=indent).encode()


@dataclass(frozen=True)
class Healthcheck:
    test: tuple[str, ...]
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"Test": list(self.test)}
        for key, value in (("Interval", self.interval), ("Timeout", self.timeout),
                           ("StartPeriod", self.start_period),
                           ("StartInterval", self.start_interval), ("Retries", self.retries)):
            if value:
                data[key] = value
        return data

    @staticmethod
    def from_json(data: dict[str, Any]) -> "Healthcheck":
        return Healthcheck(tuple(data.get("Test") or ()), data.get("Interval", 0),
                           data.get("Timeout", 0), data.get("StartPeriod", 0),
                           data.get("StartInterval", 0), data.get("Retries", 0))


class _EnvPositions:
    """Where variables are in `env` tuples, so that a run of ENV steps never searches the
    environment (10,000 of them cost 39 s). The tuples grown from one another by `with_env` share
    one table of name -> position; an entry is checked against the tuple at hand (a name, once
    placed, never moves), so one written along another path of growth is noticed. A name the table
    lacks is in none of them. The table of a tuple is found by its identity, for the latest few
    tuples: every copy of a config keeps its tuple."""

    _KEPT = 16

    def __init__(self) -> None:
        self._known: dict[int, tuple[tuple[str, ...], dict[str, int]]] = {}
        self._lock = threading.Lock()

    def table(self, env: tuple[str, ...]) -> dict[str, int]:
        known = self._known.get(id(env))
        if known is not None and known[0] is env:
            return known[1]
        table: dict[str, int] = {}
        for i, item in enumerate(env):
            table.setdefault(item.partition("=")[0], i)
        self.remember(env, table)
        return table

    def find(self, env: tuple[str, ...], key: str) -> int | None:
        """The position of `key`'s first occurrence in `env`, None when it has none."""
        at = self.table(env).get(key)
        if at is None or (at < len(env) and env[at].partition("=")[0] == key):
            return at
        return next((i for i, item in enumerate(env) if item.partition("=")[0] == key), None)

    def remember(self, env: tuple[str, ...], table: dict[str, int]) -> None:
        """Keep `env` (so its id is not reused) with its family's table."""
        with self._lock:
            if len(self._known) >= self._KEPT:
                self._known.pop(next(iter(self._known)))
            self._known[id(env)] = (env, table)


_ENV_POSITIONS = _EnvPositions()


@dataclass(frozen=True)
class ContainerConfig:
    """The `config` object of an image config: what a container of the image starts with.
    Maps (ports, volumes, labels) are written with sorted keys, as Go's encoder does."""

    user: str = ""
    exposed_ports: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    volumes: tuple[str, ...] = ()
    working_dir: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    stop_signal: str = ""
    healthcheck: Healthcheck | None = None
    on_build: tuple[str, ...] = ()
    shell: tuple[str, ...] = ()

    def env_dict(self) -> dict[str, str]:
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in self.env)

    def with_env(self, key: str, value: str) -> "ContainerConfig":
        """Set one variable, keeping its position when it already exists (as Docker does)."""
        at = _ENV_POSITIONS.find(self.env, key)
        if at is None:
            env = (*self.env, f"{key}={value}")
            table = _ENV_POSITIONS.table(self.env)
            table[key] = len(self.env)
        else:
            env = (*self.env[:at], f"{key}={value}", *self.env[at + 1:])
            table = _ENV_POSITIONS.table(self.env)
        _ENV_POSITIONS.remember(env, table)
        return replace(self, env=env)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.user:
            data["User"] = self.user
        if self.exposed_ports:
            data["ExposedPorts"] = {port: {} for port in sorted(self.exposed_ports)}
        if self.env:
            data["Env"] = list(self.env)
        if self.entrypoint is not None:
            data["Entrypoint"] = list(self.entrypoint)
        if self.cmd is not None:
            data["Cmd"] = list(self.cmd)
        if self.volumes:
            data["Volumes"] = {volume: {} for volume in sorted(self.volumes)}
        if self.working_dir:
            data["WorkingDir"] = self.working_dir
        if self.labels:
            data["Labels"] = dict(sorted(self.labels))
        if self.stop_signal:
            data["StopSignal"] = self.stop_signal
        if self.healthcheck is not None:
            data["Healthcheck"] = self.healthcheck.to_json()
        if self.on_build:
            data["OnBuild"] = list(self.on_build)
        if self.shell:
            data["Shell"] = list(self.shell)
        return data

    @staticmethod
    def from_json(data: dict[str, Any] | None) -> "ContainerConfig":
        data = data or {}
        health = data.get("Healthcheck")
        return ContainerConfig(
            user=data.get("User") or "",
            exposed_ports=tuple(data.get("ExposedPorts") or ()),
            env=tuple(data.get("Env") or ()),
            entrypoint=tuple(data["Entrypoint"]) if data.get("Entrypoint") is not None else None,
            cmd=tuple(data["Cmd"]) if data.get("Cmd") is not None else None,
            volumes=tuple(data.get("Volumes") or ()),
            working_dir=data.get("WorkingDir") or "",
            labels=tuple((data.get("Labels") or {}).items()),
            stop_signal=data.get("StopSignal") or "",
            healthcheck=Healthcheck.from_json(health) if health else None,
            on_build=tuple(data.get("OnBuild") or ()),
            shell=tuple(data.get("Shell") or ()),
        )


@dataclass(frozen=True)
class History:
    created_by: str
    created: str
    empty_layer: bool = False
    author: str = ""
    comment: str = "pybuild.dockerfile.v0"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"created": self.created}
        if self.author:
            data["author"] = self.author
        data["created_by"] = self.created_by
        if self.comment:
            data["comment"] = self.comment
        if self.empty_layer:
            data["empty_layer"] = True
        return data

    @staticmethod
    def from_json(data: dict[str, Any]) -> "History":
        return History(created_by=data.get("created_by", ""), created=data.get("created", ""),
                       empty_layer=bool(data.get("empty_layer")), author=data.get("author", ""),
                       comment=data.get("comment", ""))


@dataclass(frozen=True)
class ImageConfig:
    """An image config (OCI, with Docker's extra fields). Layers are named by diff ID."""

    config: ContainerConfig = field(default_factory=ContainerConfig)
    diff_ids: tuple[str, ...] = ()
    history: tuple[History, ...] = ()
    architecture: str = "amd64"
    os: str = "linux"
    variant: str = ""
    author: str = ""
    created: str = ""

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"architecture": self.architecture}
        if self.author:
            data["author"] = self.author
        data["config"] = self.config.to_json()
        if self.created:
            data["created"] = self.created
        data["history"] = [entry.to_json() for entry in self.history]
        data["os"] = self.os
        data["rootfs"] = {"type": "layers", "diff_ids": list(self.diff_ids)}
        if self.variant:
            data["variant"] = self.variant
        return data

    def to_bytes(self) -> bytes:
        return dumps(self.to_json())

    @staticmethod
    def from_json(data: dict[str, Any]) -> "ImageConfig":
        return ImageConfig(
            config=ContainerConfig.from_json(data.get("config")),
            diff_ids=tuple((data.get("rootfs") or {}).get("diff_ids") or ()),
            history=tuple(History.from_json(h) for h in data.get("history") or ()),
            architecture=data.get("architecture", "amd64"), os=data.get("os", "linux"),
            variant=data.get("variant", ""), author=data.get("author", ""),
            created=data.get("created", ""),
        )


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: tuple[tuple[str, str], ...] = ()
    platform: tuple[tuple[str, str], ...] = ()  # in an index: ("architecture", ...), ("os", ...)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest,
                                "size": self.size}
        if self.annotations:
            data["annotations"] = dict(self.annotations)
        if self.platform:
            data["platform"] = dict(self.platform)
        return data


@dataclass(frozen=True)
class Annotations:
    """`--annotation`s by where buildx puts them: in the image manifest, on the manifest's
    descriptor in an index, in the index itself."""

    manifest: tuple[tuple[str, str], ...] = ()
    descriptor: tuple[tuple[str, str], ...] = ()
    index: tuple[tuple[str, str], ...] = ()


def manifest_bytes(config: Descriptor, layers: list[Descriptor],
                   media_type: str = OCI_MANIFEST,
                   annotations: tuple[tuple[str, str], ...] = ()) -> bytes:
    """An image manifest; `annotations` only in an OCI one (Docker's schema 2 has none)."""
    return dumps({"schemaVersion": 2, "mediaType": media_type, "config": config.to_json(),
                  "layers": [layer.to_json() for layer in layers]}
                 | ({"annotations": dict(annotations)} if annotations else {}))


def index_bytes(manifests: list[Descriptor],
                annotations: tuple[tuple[str, str], ...] = ()) -> bytes:
    return dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                  "manifests": [m.to_json() for m in manifests]}
                 | ({"annotations": dict(annotations)} if annotations else {}))


_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def is_digest(text: str) -> bool:
    """Whether `text` is a sha256 digest, the only kind pybuild stores blobs under."""
    return bool(_DIGEST.fullmatch(text))


def parse_config(data: bytes) -> ImageConfig:
    """An image config written by someone else (a base image), checked as far as pybuild relies on
    it: a JSON object whose `rootfs.diff_ids` are sha256 digests, since they name stored layers.
    Raises ValueError saying what is wrong."""
    try:
        config = json.loads(data)
    except (ValueError, RecursionError) as error:  # RecursionError: nested too deep
        raise ValueError(f"the image config is not valid JSON: {error}") from None
    if not isinstance(config, dict):
        raise ValueError("the image config is not a JSON object")
    rootfs = config.get("rootfs")
    diff_ids = (rootfs.get("diff_ids") or []) if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) and is_digest(d)
                                                 for d in diff_ids):
        raise ValueError("the image config's rootfs.diff_ids are not a list of sha256 digests")
    try:
        return ImageConfig.from_json(config)
    except (AttributeError, TypeError) as error:
        raise ValueError(f"the image config has a field of the wrong type: {error}") from None
