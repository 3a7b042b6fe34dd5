"""What a build is asked for and what it gives back: the whole surface of builder.api, one field
per command-line option in, the image's identity and the per-step summaries out."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from builder.limits import Limits
from builder.progress.summary import StepSummary
from builder.runoptions import RunOptions
from builder.supplychain.options import Attestations
from layers.compression import Compression
from layers.image import Annotations
from layers.platform import Platform

if TYPE_CHECKING:
    from builder.cache.spec import CacheSpec
    from builder.output.spec import OutputSpec
    from builder.sources.baseimage import ContextSource
    from builder.sources.secrets import SecretSource, SshSource


@dataclass(frozen=True)
class BuildRequest:
    context: str
    dockerfile: str | None = None
    dockerfile_text: str | None = None
    tags: tuple[str, ...] = ()
    build_args: dict[str, str | None] = field(default_factory=dict)
    target: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    output: str | None = "image.tar"
    exports: tuple[OutputSpec, ...] = ()  # -o type=docker|oci|tar|local with dest=
    annotations: Annotations = Annotations()  # --annotation, where buildx puts each
    attestations: Attestations = Attestations()  # --sbom, --provenance, --attest
    compression: Compression = Compression.NONE
    cache_dir: str = ""
    iidfile: str | None = None
    source_date_epoch: int | None = None
    network: str = "host"
    no_cache: bool = False
    no_cache_filter: tuple[str, ...] = ()
    build_contexts: dict[str, ContextSource] = field(default_factory=dict)
    limits: Limits = Limits()
    run_options: RunOptions = RunOptions()  # --add-host, --ulimit, --shm-size, --cgroup-parent
    pull: bool = False
    push: bool = False
    push_media_types: str = ""  # "oci" or "docker" (oci-mediatypes=); "" as the compression needs
    insecure_registries: frozenset[str] = frozenset()
    registry_timeout: float = 120.0  # seconds a registry request may take, retries included
    add_max_size: int | None = None  # bytes one ADD <url> may download (None: the default)
    cache_from: tuple[CacheSpec, ...] = ()
    cache_to: tuple[CacheSpec, ...] = ()
    isolation: str = "auto"  # or namespaces, rootless, chroot (builder/sandbox)
    entitlements: frozenset[str] = frozenset()  # --allow: security.insecure, network.host
    docker_load: str | None = None  # the docker CLI to load the image into (--load)
    seccomp: bool = True  # Docker's default profile for RUN; --security-opt seccomp=unconfined
    secrets: dict[str, SecretSource] = field(default_factory=dict)  # --secret, by id
    ssh: dict[str, SshSource] = field(default_factory=dict)  # --ssh, by id
    platforms: tuple[Platform, ...] = ()  # --platform: the ones built for; () for the host's
    notices: tuple[str, ...] = ()  # warnings about the command line, given by the build's log
    max_parallelism: int | None = None  # stages built at the same time; None: one per CPU


@dataclass(frozen=True)
class BuildResult:
    """What a build made. `image_id` is the config's digest (what `docker images` shows),
    `manifest_digest` that of the tarball's manifest ("" without one), `layers` the diff IDs and
    `layer_sizes` the sizes of the layers as the tarball holds them (`size` their sum); `pushed`
    pairs each pushed reference with the digest of its manifest in the registry."""

    image_id: str
    manifest_digest: str
    tags: tuple[str, ...]
    layers: tuple[str, ...]
    size: int
    warnings: tuple[str, ...]
    steps_run: int = 0
    steps_cached: int = 0
    seconds: float = 0.0
    layer_sizes: tuple[int, ...] = ()
    pushed: tuple[tuple[str, str], ...] = ()
    steps: tuple[StepSummary, ...] = ()
