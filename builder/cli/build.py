"""`pybuild [build] [OPTIONS] CONTEXT`: argv -> BuildRequest, the build, its exit status and its
last line.

The request is checked before the build starts (files written after it, options that cannot
work here): a bad one costs no minutes of work. The builder is imported only when a build runs.
"""
from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from builder import __version__
from builder.cli import runflags
from builder.cli.options import (EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_USAGE,
                                 add_progress_options, add_registry_options, usage)

if TYPE_CHECKING:
    from builder.api import BuildRequest, BuildResult
    from builder.output.spec import OutputSpec
    from builder.progress.events import Sink
    from layers.compression import Compression

_EPILOG = """\
examples:
  pybuild -t app:1 .                          build ./Dockerfile into ./image.tar
  pybuild -t app:1 --load .                   ... and hand it to docker load
  pybuild -t registry.example/app:1 --push \\
      --cache-from registry.example/app:cache \\
      --cache-to type=registry,ref=registry.example/app:cache .
  pybuild -f - -o - . < Dockerfile | docker load
  pybuild -o type=local,dest=dist .           the final stage's files into ./dist (buildx's -o
                                              forms: type=docker|oci|tar|local|registry)
  pybuild history app:1                       how an image of the local store was made

environment:
  SOURCE_DATE_EPOCH   clamp file times and the config's `created` time: reproducible images
  PYBUILD_CACHE_DIR   the cache root (blobs, snapshots, the step index, the local image store)
  DOCKER_CONFIG       where config.json (registry credentials) is, default ~/.docker
  PYBUILD_REGISTRY_TIMEOUT  the default of --registry-timeout (seconds), also ADD <url>'s
  PYBUILD_ADD_MAX_SIZE  the most one ADD <url> may download (default 8GiB; 512MB, 2GiB...)
  PYBUILD_MAX_PARALLEL_STAGES  the default of --max-parallelism (stages built at once)
  HTTP_PROXY, HTTPS_PROXY, NO_PROXY  proxies for pulls, pushes and ADD <url> (as Docker's)
  NO_COLOR            no colour, and no live view with --progress auto

exit status:
  0 success; 1 the build failed (the message names the Dockerfile line, no output is left
  behind), or --check found something; 2 usage error, or a Dockerfile feature pybuild does not support yet; 130 interrupted;
  143 terminated. The README has the full reference: what matches Docker, and the known limits."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pybuild",
        usage="pybuild [OPTIONS] CONTEXT\n       pybuild parse [-f FILE]\n"
              "       pybuild load [-i ARCHIVE] | images | rmi IMAGE... | push NAME[:TAG]\n"
              "       pybuild history [--no-trunc] [--json] IMAGE | inspect IMAGE | sbom IMAGE\n"
              "       pybuild du | prune [--all] [--keep-storage SIZE] [--filter until=DURATION]",
        description="Build a container image from a Dockerfile, without a daemon, into a tarball\n"
                    "that `docker load` accepts (a docker-save archive that is also an OCI layout),\n"
                    "or push it to a registry.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_EPILOG)
    group = parser.add_argument_group("what to build")
    group.add_argument("context", metavar="CONTEXT", help="the build context directory")
    group.add_argument("-f", "--file", metavar="FILE",
                        help="the Dockerfile (default CONTEXT/Dockerfile; - reads stdin)")
    group.add_argument("--target", metavar="STAGE", help="build this stage, and only the stages "
                        "it needs")
    group.add_argument("--max-parallelism", type=_stage_count, metavar="N",
                        default=os.environ.get("PYBUILD_MAX_PARALLEL_STAGES") or None,
                        help="build at most N stages at the same time, as buildkitd's "
                             "max-parallelism (default $PYBUILD_MAX_PARALLEL_STAGES, else one "
                             "per CPU; 1: one stage after another)")
    group.add_argument("--build-arg", action="append", default=[], metavar="KEY[=VALUE]",
                        help="set a build-time variable (repeatable); KEY alone takes the value "
                             "from the environment")
    group.add_argument("--build-context", action="append", default=[], metavar="NAME=SOURCE",
                        help="make FROM NAME (and COPY --from=NAME) use SOURCE: "
                             "docker-image://REF, oci-layout://DIR[:TAG], docker-archive:PATH, "
                             "oci-archive:PATH (repeatable)")
    group.add_argument("--secret", action="append", default=[], metavar="id=ID[,src=FILE|,env=VAR]",
                       help="a secret for RUN --mount=type=secret: from FILE, from the "
                            "environment variable VAR, or (id=ID alone) from $ID else the file "
                            "ID; never stored anywhere (repeatable)")
    group.add_argument("--ssh", action="append", default=[],
                       metavar="default|ID[=SOCKET|KEY[,KEY...]]",
                       help="forward an ssh-agent socket ($SSH_AUTH_SOCK for `default`) to RUN "
                            "--mount=type=ssh, or private key files, held by an ssh-agent of "
                            "the build's own (repeatable)")
    group.add_argument("--platform", metavar="PLATFORM",
                        help="the platforms to build for (os/arch[/variant], comma-separated "
                             "for an image index); another architecture's RUN needs a "
                             "binfmt_misc handler (qemu-user-static)")
    group = parser.add_argument_group("the image and where it goes")
    group.add_argument("-t", "--tag", action="append", default=[], metavar="NAME[:TAG]",
                        help="name the image (repeatable); `docker load` applies every tag")
    group.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                        help="add a label to the image (repeatable)")
    group.add_argument("-o", "--output", action="append", default=[],
                        metavar="PATH|type=TYPE,...",
                        help="where to write the image tarball (default ./image.tar, none with "
                             "--push or another -o; - for stdout); or as buildx: "
                             "type=docker|oci|tar,dest=FILE|- (oci: an OCI layout only; tar: the "
                             "root filesystem), type=local,dest=DIR (the root filesystem), "
                             "type=docker (docker load), type=registry[,name=NAME] or "
                             "type=image,name=NAME,push=true (push); keys compression=, "
                             "oci-mediatypes=, rewrite-timestamp= (repeatable)")
    group.add_argument("--compression", choices=("none", "gzip", "zstd"), default="none",
                        help="compress the layers in the tarball (default none, as docker save "
                             "writes; zstd needs Docker 23.0 or newer to load)")
    group.add_argument("--load", action="store_true",
                        help="load the image into Docker with `docker load` (the -o tarball, or "
                             "streamed without one)")
    group.add_argument("--iidfile", metavar="FILE", help="write the image ID to FILE")
    group.add_argument("--metadata-file", metavar="FILE",
                        help="write what the build made to FILE as JSON (image and config "
                             "digests, tags, layers, steps, pushes), as buildx does")
    runflags.add_image_flags(group)
    group = parser.add_argument_group("registries and shared caches")
    group.add_argument("--push", action="store_true",
                        help="push every -t to its registry (layers gzip unless --compression "
                             "zstd)")
    group.add_argument("--pull", action="store_true",
                        help="resolve every FROM image in its registry again, even one the local "
                             "store has")
    add_registry_options(group)
    group.add_argument("--cache-from", action="append", default=[], metavar="SOURCE",
                        help="import a build cache: type=registry,ref=REF (or REF), "
                             "type=local,src=DIR[,tag=TAG] (repeatable)")
    group.add_argument("--cache-to", action="append", default=[], metavar="DEST",
                        help="export this build's cache: type=registry,ref=REF or "
                             "type=local,dest=DIR[,tag=TAG], with compression=gzip|zstd, "
                             "ignore-error=true, mounts=true (the RUN --mount=type=cache "
                             "directories too, each up to mount-max=SIZE, default 1g) "
                             "(repeatable)")
    group = parser.add_argument_group("how RUN runs")
    group.add_argument("--network", choices=("default", "host", "none"), default="default",
                        help="network for RUN: host (shares the host's network; the default, so "
                             "package installs work) or none (only loopback)")
    group.add_argument("--isolation", choices=("auto", "namespaces", "rootless", "chroot"),
                        default="auto",
                        help="how RUN is isolated (default auto: namespaces as root, rootless "
                             "(a user namespace) otherwise, chroot where unshare is forbidden, "
                             "as in an unprivileged container)")
    group.add_argument("--allow", action="append", default=[], metavar="ENTITLEMENT",
                        choices=("security.insecure", "network.host"),
                        help="grant an entitlement: security.insecure lets RUN "
                             "--security=insecure run without the command's user namespace (it "
                             "may then make device nodes and mount); network.host is accepted "
                             "for buildx's sake (RUN has the host's network anyway); repeatable")
    group.add_argument("--security-opt", action="append", default=[], metavar="OPT",
                        help="seccomp=unconfined: RUN without Docker's default seccomp profile "
                             "(it has the profile by default)")
    group.add_argument("-m", "--memory", metavar="SIZE",
                        help="memory limit of each RUN, in bytes or with a unit b, k, m, g (512m, "
                             "1g; at least 6m); no swap beyond it")
    group.add_argument("--cpus", metavar="N", help="CPU limit of each RUN (0.5: half of one CPU)")
    group.add_argument("--pids-limit", metavar="N",
                        help="most processes (threads included) each RUN may have at once "
                             "(default 4096; 0 or -1: no limit)")
    runflags.add_run_flags(group)
    group = parser.add_argument_group("the local build cache")
    group.add_argument("--no-cache", action="store_true",
                        help="reuse no earlier result: run every step (results are still stored "
                             "for later builds)")
    group.add_argument("--no-cache-filter", action="append", default=[], metavar="STAGE",
                        help="run every step of this stage without reusing results (repeatable)")
    group.add_argument("--cache-dir", metavar="DIR", help="cache root (default "
                        "$PYBUILD_CACHE_DIR, else $XDG_CACHE_HOME/pybuild, else ~/.cache/pybuild)")
    group = parser.add_argument_group("the build log")
    add_progress_options(group, "build")
    group.add_argument("-q", "--quiet", action="store_true",
                        help="print only the image ID (same as --progress=quiet)")
    runflags.add_builder_flags(parser)
    group = parser.add_argument_group("instead of a build")
    group.add_argument("--call", default="build", metavar="build|check|outline|targets",
                       help="check: run the Dockerfile checks only (exit 1 when one finds "
                            "something); outline: the target's build args; targets: the "
                            "stages, as buildx prints them (default build)")
    group.add_argument("--check", dest="call", action="store_const", const="check",
                       help="same as --call=check")
    parser.add_argument("--version", action="version", version=f"pybuild {__version__}")
    return parser


def build_command(argv: list[str]) -> int:
    options = build_parser().parse_args(argv)
    if options.call != "build":
        from builder.cli.calls import CALLS, call_command
        if options.call not in CALLS:
            return usage(f"--call {options.call}: not one of {', '.join(CALLS)}")
        return call_command(options, _build_args(options.build_arg))
    # The objects of the modules imported here live as long as the process: the collector need
    # not walk them while they are made (3% of the imports' instructions) nor afterwards (30 ms
    # of a cached rebuild with 20,000 files went to full collections).
    gc.disable()
    from builder.api import build
    from builder.errors import UsageError
    gc.freeze()
    gc.enable()
    try:
        request = request_from(options)
    except UsageError as error:
        return usage(str(error))
    except _Unavailable as error:
        _failed(str(error), options.progress)
        return EXIT_FAILURE
    quiet = options.quiet or options.progress == "quiet"
    terminated = _sigterm_interrupts()
    try:
        result = build(request, *_sinks(options, quiet))
        if options.metadata_file:
            from builder.output.metadatafile import write_metadata
            write_metadata(options.metadata_file, result)
    except (Exception, KeyboardInterrupt) as error:
        return _exit_status(error, bool(terminated), options.progress)
    _summary(result, request, options.progress, quiet)
    return 0


class _Unavailable(Exception):
    """Something the request needs is missing on this machine (exit status 1)."""


def request_from(options: argparse.Namespace) -> BuildRequest:
    """The request the options make; UsageError for a request that cannot work, _Unavailable
    for one this machine cannot serve. Reads the Dockerfile from stdin for `-f -`."""
    from builder.api import BuildRequest
    _check_context(options)
    contexts = _build_contexts(options.build_context)
    secrets, ssh = _secrets(options)
    limits = _limits(options)
    _check_security_opt(options.security_opt)
    outputs = _outputs(options)
    if outputs.push and not outputs.tags:
        raise _usage_error("--push needs at least one -t NAME[:TAG] (or name=) to push to")
    output = outputs.tarball or (None if outputs.push or outputs.load or outputs.exports
                                 else "image.tar")
    _check_files(options, output, outputs.exports)
    _check_cache_dir(options.cache_dir)
    docker = _docker(outputs.load, output)
    caches = _caches(options)
    text = sys.stdin.read() if options.file == "-" else None
    source_date_epoch = _source_date_epoch()
    platforms = _platforms(options.platform, output, outputs)
    try:
        flags = runflags.read(options, outputs.push_media_types == "docker" or any(
            spec.oci_mediatypes is False for spec in outputs.exports), platforms)
    except ValueError as error:
        raise _usage_error(str(error)) from None
    return BuildRequest(**flags,
        context=options.context, dockerfile=None if options.file in (None, "-") else options.file,
        dockerfile_text=text, tags=outputs.tags, build_args=_build_args(options.build_arg),
        target=options.target, labels=_labels(options.label), output=output,
        exports=outputs.exports, compression=outputs.compression,
        push_media_types=outputs.push_media_types,
        cache_dir=options.cache_dir or "",
        iidfile=options.iidfile, network="none" if options.network == "none" else "host",
        build_contexts=contexts, no_cache=options.no_cache, limits=limits,
        secrets=secrets, ssh=ssh, pull=options.pull, push=outputs.push,
        insecure_registries=frozenset(options.insecure_registry),
        registry_timeout=options.registry_timeout,
        cache_from=caches["--cache-from"], cache_to=caches["--cache-to"],
        no_cache_filter=tuple(name.lower() for name in options.no_cache_filter),
        isolation=options.isolation, docker_load=docker,
        entitlements=frozenset(options.allow),
        seccomp=not any(option.replace(":", "=", 1) == "seccomp=unconfined"
                        for option in options.security_opt),
        source_date_epoch=source_date_epoch, add_max_size=_add_max_size(),
        platforms=platforms, max_parallelism=options.max_parallelism)


def _usage_error(message: str) -> Exception:
    from builder.errors import UsageError
    return UsageError(message)


def _check_context(options: argparse.Namespace) -> None:
    if not os.path.isdir(options.context):
        raise _usage_error(f"context {options.context!r} is not a directory")


def _platforms(value: str | None, output: str | None, outputs) -> tuple:
    """--platform's platforms. Several make an image index: a tarball file's, or pushed."""
    if not value:
        return ()
    from layers.platform import parse_platform
    try:
        platforms = tuple(dict.fromkeys(parse_platform(item) for item in value.split(",")))
    except ValueError as error:
        raise _usage_error(f"--platform {error}") from None
    if len(platforms) > 1 and (outputs.load or outputs.exports or output == "-"
                               or not (output or outputs.push)):
        raise _usage_error(f"--platform {value}: several platforms make an image index, which "
                           "pybuild writes only to a tarball file (-o FILE) and --push, not to "
                           "--load, -o type=... or stdout")
    return platforms


def _build_contexts(values: list[str]) -> dict:
    if not values:
        return {}
    from builder.sources.baseimage import parse_build_context
    try:
        return dict(parse_build_context(item) for item in values)
    except ValueError as error:
        raise _usage_error(str(error)) from None


def _secrets(options: argparse.Namespace) -> tuple[dict, dict]:
    """--secret and --ssh, by id."""
    if not options.secret and not options.ssh:
        return {}, {}
    from builder.sources.secrets import parse_secret, parse_ssh
    try:
        return ({s.id: s for s in map(parse_secret, options.secret)},
                {s.id: s for s in map(parse_ssh, options.ssh)})
    except ValueError as error:
        raise _usage_error(str(error)) from None


def _limits(options: argparse.Namespace):
    from builder.limits import parse_limits
    try:
        return parse_limits(options.memory, options.cpus, options.pids_limit)
    except ValueError as error:
        raise _usage_error(str(error)) from None


def _check_security_opt(values: list[str]) -> None:
    for option in values:
        if option.replace(":", "=", 1) not in ("seccomp=unconfined", "seccomp=default"):
            raise _usage_error(f"--security-opt {option}: only seccomp=unconfined (and "
                               "seccomp=default) are supported")


@dataclass(frozen=True)
class _Outputs:
    """What the -o values (with -t, --push, --load and --compression) ask for."""

    tarball: str | None
    exports: tuple[OutputSpec, ...]
    tags: tuple[str, ...]
    push: bool
    load: bool
    compression: Compression
    push_media_types: str


def _outputs(options: argparse.Namespace) -> _Outputs:
    """The bare -o PATH is the tarball; buildx's `type=` forms are exports (docker, oci, tar and
    local with a dest), docker load (type=docker alone) or a push (type=image,push=true,
    type=registry), whose name= adds to the -t names and whose compression= sets --compression."""
    from builder.output.spec import is_spec, parse_output
    from layers.compression import Compression
    from layers.reference import parse_reference
    bare = [value for value in options.output if not is_spec(value)]
    if len(bare) > 1:
        raise _usage_error(f"-o {bare[1]}: only one image tarball path (-o PATH) may be given")
    try:
        specs = [parse_output(value) for value in options.output if is_spec(value)]
        for spec in specs:
            for name in spec.names:
                parse_reference(name)
    except ValueError as error:
        raise _usage_error(str(error)) from None
    tags = tuple(dict.fromkeys(options.tag + [n for s in specs if s.kind == "image"
                                              for n in s.names]))
    compression = Compression[options.compression.upper()]
    media_types = ""
    for spec in specs:
        if spec.kind == "image" and spec.push:
            compression = spec.compression or compression
            if spec.oci_mediatypes is not None:
                media_types = "oci" if spec.oci_mediatypes else "docker"
    if media_types == "docker" and compression is Compression.ZSTD:
        raise _usage_error("zstd layers need OCI media types: oci-mediatypes=false cannot push "
                           "them")
    exports = tuple(spec for spec in specs if spec.writes)
    to_stdout = bare.count("-") + sum(spec.dest == "-" for spec in exports)
    if to_stdout > 1:
        raise _usage_error("only one output can go to stdout (dest=-)")
    if to_stdout and sys.stdout.isatty():
        raise _usage_error("refusing to write an image tarball to a terminal; use -o FILE or a "
                           "pipe")
    return _Outputs(bare[0] if bare else None, exports, tags,
                    options.push or any(spec.push for spec in specs),
                    options.load or any(spec.kind == "docker" and not spec.writes
                                        for spec in specs),
                    compression, media_types)


def _check_files(options: argparse.Namespace, output: str | None,
                 exports: tuple[OutputSpec, ...]) -> None:
    """Files written after the build are checked before it, not after minutes of work."""
    files = [("--trace", options.trace), ("--metadata-file", options.metadata_file),
             ("-o", None if output == "-" else output), ("--iidfile", options.iidfile)]
    files += [(f"-o {spec.text}", spec.dest) for spec in exports
              if spec.dest != "-" and spec.kind != "local"]
    for option, path in files:
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise _usage_error(f"{option} {path}: its directory does not exist")
        if path and os.path.isdir(path):
            inside = f" (-o {os.path.join(path, 'image.tar')})" if option == "-o" else ""
            raise _usage_error(f"{option} {path}: is a directory; name the file in it{inside}")
    for spec in exports:
        if spec.kind == "local" and os.path.exists(spec.dest) and not os.path.isdir(spec.dest):
            raise _usage_error(f"-o {spec.text}: {spec.dest} is not a directory")
        if spec.kind == "local" and os.path.realpath(spec.dest) == "/":
            raise _usage_error(f"-o {spec.text}: refusing to write an image's files over /")


def _check_cache_dir(option: str | None) -> None:
    cache_dir = option or os.environ.get("PYBUILD_CACHE_DIR")
    if cache_dir and os.path.exists(cache_dir) and not os.path.isdir(cache_dir):
        where = "--cache-dir" if option else "PYBUILD_CACHE_DIR"
        raise _usage_error(f"{where} {cache_dir}: not a directory")


def _docker(load: bool, output: str | None) -> str | None:
    """The docker command --load hands the image to."""
    if not load:
        return None
    if output == "-":
        raise _usage_error("--load cannot load a tarball written to stdout (-o -)")
    from builder.output.dockerload import docker_command
    docker = docker_command()
    if docker is None:
        raise _Unavailable("--load needs the docker command (none at /usr/bin/docker or on PATH)")
    return docker


def _caches(options: argparse.Namespace) -> dict[str, tuple]:
    if not (options.cache_from or options.cache_to):
        return {"--cache-from": (), "--cache-to": ()}
    from builder.cache.spec import parse_cache_spec
    return {option: tuple(parse_cache_spec(text, option) for text in values)
            for option, values in (("--cache-from", options.cache_from),
                                   ("--cache-to", options.cache_to))}


def _source_date_epoch() -> int | None:
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value is not None and not value.isdigit():
        raise _usage_error(f"SOURCE_DATE_EPOCH={value!r} is not a whole number of seconds")
    return int(value) if value else None


def _stage_count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of stages, 1 or more")
    return int(text)


def _add_max_size() -> int | None:
    value = os.environ.get("PYBUILD_ADD_MAX_SIZE")
    if not value:
        return None
    from builder.units import parse_size
    try:
        return parse_size(value)
    except ValueError as error:
        raise _usage_error(f"PYBUILD_ADD_MAX_SIZE: {error}") from None


def _build_args(values: list[str]) -> dict[str, str | None]:
    """`KEY=VALUE`, or `KEY` alone taking the environment's value (unset stays unset), as Docker."""
    args: dict[str, str | None] = {}
    for item in values:
        key, has_value, value = item.partition("=")
        args[key] = value if has_value else os.environ.get(key)
    return args


def _labels(values: list[str]) -> dict[str, str]:
    labels = {}
    for item in values:
        key, _, value = item.partition("=")
        labels[key] = value
    return labels


def _sinks(options: argparse.Namespace, quiet: bool) -> list[Sink]:
    from builder.progress.modes import progress_sinks
    return progress_sinks("quiet" if quiet else options.progress, options.trace)


def _sigterm_interrupts() -> list[int]:
    """SIGTERM unwinds like Ctrl-C: the running RUN is killed and temp files removed. The list
    returned holds the signal once one came."""
    terminated: list[int] = []

    def on_sigterm(number, frame):
        terminated.append(number)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    return terminated


def _exit_status(error: BaseException, terminated: bool, progress: str) -> int:
    """What a failed build says last, and its exit status."""
    from builder.errors import NotSupported
    from grammar.errors import DockerfileError
    from layers.errors import LayerError
    if isinstance(error, DockerfileError):
        _failed(error.render(), progress)
        return EXIT_USAGE if isinstance(error, NotSupported) else EXIT_FAILURE
    if isinstance(error, (LayerError, OSError)):
        _failed(str(error), progress)
        return EXIT_FAILURE
    if isinstance(error, KeyboardInterrupt):
        print("ERROR: terminated" if terminated else "ERROR: interrupted", file=sys.stderr)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    if os.environ.get("PYBUILD_DEBUG"):  # a bug in pybuild: said briefly, the traceback on request
        raise error
    print(f"ERROR: internal error: {type(error).__name__}: {error} (this is a pybuild bug; "
          "PYBUILD_DEBUG=1 shows the traceback)", file=sys.stderr)
    return EXIT_FAILURE


def _summary(result: BuildResult, request: BuildRequest, progress: str, quiet: bool) -> None:
    """The last line of a build that succeeded."""
    if quiet:
        print(result.image_id)
    elif progress == "json":
        import dataclasses
        import json
        print(json.dumps({"event": "BuildFinished", **dataclasses.asdict(result)}), file=sys.stderr)
    else:
        from builder.units import human_size
        names = ", ".join(result.tags) or "untagged"
        where = ", ".join([request.output] * bool(request.output)
                          + [spec.dest for spec in request.exports]
                          + ["docker"] * bool(request.docker_load)
                          + ["pushed"] * request.push)
        print(f"built {result.image_id} ({names}) -> {where}: {result.steps_run} steps "
              f"run, {result.steps_cached} cached, {human_size(result.size)}, "
              f"{result.seconds:.1f}s", file=sys.stderr)


def _failed(message: str, progress: str) -> None:
    """The last words of a failed build: an `ERROR:` line, or a BuildFailed event in JSON."""
    from builder.progress.sinks import last_words
    last_words(message, progress, "BuildFailed")
