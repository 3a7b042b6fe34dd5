"""The `docker buildx build` flags that shape what RUN sees (`--add-host`, `--ulimit`,
`--shm-size`, `--cgroup-parent`) and what the manifests carry (`--annotation`), and buildx's
builder selection, which a daemonless pybuild has no use for: defined and read here so the
build command stays a list of groups."""
from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from layers.platform import Platform


def add_run_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--add-host", action="append", default=[], metavar="NAME:IP",
                       help="add a line `IP NAME` to RUN's /etc/hosts (repeatable; NAME=IP "
                            "works too)")
    group.add_argument("--ulimit", action="append", default=[], metavar="TYPE=SOFT[:HARD]",
                       help="a resource limit of each RUN's command, Docker's names (nofile, "
                            "nproc, core, stack, ...; -1: unlimited; repeatable)")
    group.add_argument("--shm-size", metavar="SIZE",
                       help="size of RUN's /dev/shm (default 64m, as Docker's); not with "
                            "--isolation chroot, which has no /dev/shm")
    group.add_argument("--cgroup-parent", metavar="PATH",
                       help="make RUN's cgroups under PATH (from the hierarchy's root when it "
                            "starts with /, else from pybuild's own cgroup) instead of `pybuild`")


def add_image_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--annotation", action="append", default=[],
                       metavar="[TYPE:]KEY=VALUE",
                       help="annotate the image manifest (TYPE manifest, the default), the "
                            "archives' index.json (index) or the manifest's entry there "
                            "(manifest-descriptor); repeatable")
    group.add_argument("--sbom", metavar="true|false",
                       help="attach an SPDX SBOM of the image's packages (dpkg, apk, rpm, "
                            "Python, npm) as an in-toto attestation, as buildx does; off by "
                            "default")
    group.add_argument("--provenance", metavar="true|false|mode=min|max",
                       help="attach SLSA provenance (off by default: see README, Supply chain)")
    group.add_argument("--attest", action="append", default=[],
                       metavar="type=sbom|provenance[,KEY=VALUE...]",
                       help="an attestation as buildx's --attest (repeatable)")


def add_builder_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("buildx builders (pybuild has none)")
    group.add_argument("--builder", metavar="NAME",
                       help="accepted and ignored with a warning: pybuild is daemonless, every "
                            "build runs in the pybuild process")
    for flag in ("--driver", "--driver-opt"):
        group.add_argument(flag, action="append", default=[], help=argparse.SUPPRESS)


def read(options: argparse.Namespace, docker_media_types: bool,
         platforms: tuple[Platform, ...]) -> dict:
    """The BuildRequest fields these flags give; ValueError for a usage error (manifest
    annotations where an output asks for `docker_media_types`: Docker's schema 2 has none;
    an annotation for a platform other than the one of `platforms`, or for any of several).
    --builder's warning is a notice the build's log gives, in every progress mode."""
    from builder.output.annotations import parse_annotations
    from builder.runoptions import parse_run_options
    from builder.supplychain.options import no_default_attestations, parse_attestations
    from layers.platform import host_platform
    if options.driver or options.driver_opt:
        raise ValueError("--driver and --driver-opt are `docker buildx create` options: pybuild "
                         "is daemonless, it has no builder to create or configure")
    notices = () if options.builder is None else (
        f"--builder {options.builder} is ignored: pybuild is daemonless, the build runs in this "
        "process",)
    target = (platforms[0] if len(platforms) == 1 else None) if platforms else host_platform()
    annotations = parse_annotations(options.annotation, target)
    if annotations.manifest and docker_media_types:
        raise ValueError("--annotation: manifest annotations need an OCI manifest, and "
                         "oci-mediatypes=false asks for Docker's, which has none")
    return {"notices": notices,
            "run_options": parse_run_options(options.add_host, options.ulimit,
                                             options.shm_size, options.cgroup_parent),
            "annotations": annotations,
            "attestations": parse_attestations(options.sbom, options.provenance, options.attest,
                                               no_default_attestations(os.environ))}
