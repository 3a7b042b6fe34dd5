"""`pybuild`: the command line, shaped like `docker build`.

Only argparse is imported at start-up; the builder is imported when a build actually runs, so
`pybuild --version` and `--help` answer at once.
"""
from __future__ import annotations

import argparse
import gc
import os
import signal
import sys

from builder import __version__
from builder.cli.options import add_registry_options

EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 1, 2, 130, 143
_EPILOG = """\
examples:
  pybuild -t app:1 .                          build ./Dockerfile into ./image.tar
  pybuild -t app:1 --load .                   ... and hand it to docker load
  pybuild -t registry.example/app:1 --push \\
      --cache-from registry.example/app:cache \\
      --cache-to type=registry,ref=registry.example/app:cache .
  pybuild -f - -o - . < Dockerfile | docker load
  pybuild history app:1                       how an image of the local store was made

environment:
  SOURCE_DATE_EPOCH   clamp file times and the config's `created` time: reproducible images
  PYBUILD_CACHE_DIR   the cache root (blobs, snapshots, the step index, the local image store)
  DOCKER_CONFIG       where config.json (registry credentials) is, default ~/.docker
  PYBUILD_REGISTRY_TIMEOUT  the default of --registry-timeout (seconds)
  NO_COLOR            no colour, and no live view with --progress auto

exit status:
  0 success; 1 the build failed (the message names the Dockerfile line, no output is left
  behind); 2 usage error, or a Dockerfile feature pybuild does not support yet; 130 interrupted;
  143 terminated. The README has the full reference: what matches Docker, and the known limits."""


# Options that mean the same to every verb taking them, each with a value: they may come before
# the verb too (`pybuild --cache-dir X load`), as `docker --config X build` takes them.
_GLOBAL_OPTIONS = frozenset({"--cache-dir", "--insecure-registry", "--registry-timeout"})
_VERBS = frozenset({"build", "parse", "du", "prune", "load", "images", "rmi", "push", "history",
                    "inspect"})


def _verb_first(argv: list[str]) -> list[str]:
    """`--cache-dir X load -i a.tar` as `load --cache-dir X -i a.tar`; anything else as it is."""
    index = 0
    while index < len(argv) and argv[index].partition("=")[0] in _GLOBAL_OPTIONS:
        index += 1 if "=" in argv[index] else 2
    if 0 < index < len(argv) and argv[index] in _VERBS:
        return [argv[index], *argv[:index], *argv[index + 1:]]
    return argv


def main(argv: list[str] | None = None) -> int:
    argv = _verb_first(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["parse"]:
        return _parse_command(argv[1:])
    if argv[:1] in (["du"], ["prune"]):
        from builder.cache import prune
        return {"du": prune.du_command, "prune": prune.prune_command}[argv[0]](argv[1:])
    if argv[:1] in (["load"], ["images"], ["rmi"], ["push"], ["history"], ["inspect"]):
        from builder.cli import images
        return {"load": images.load_command, "images": images.images_command,
                "rmi": images.rmi_command, "push": images.push_command,
                "history": images.history_command,
                "inspect": images.inspect_command}[argv[0]](argv[1:])
    if argv[:1] == ["build"]:
        argv = argv[1:]
    return _build_command(argv)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pybuild",
        usage="pybuild [OPTIONS] CONTEXT\n       pybuild parse [-f FILE]\n"
              "       pybuild load [-i ARCHIVE] | images | rmi IMAGE... | push NAME[:TAG]\n"
              "       pybuild history [--no-trunc] [--json] IMAGE | inspect IMAGE\n"
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
    group.add_argument("--ssh", action="append", default=[], metavar="default|ID[=SOCKET]",
                       help="forward an ssh-agent socket ($SSH_AUTH_SOCK for `default`) to RUN "
                            "--mount=type=ssh (repeatable)")
    group.add_argument("--platform", metavar="PLATFORM",
                        help="target platform; only the host's is supported")
    group = parser.add_argument_group("the image and where it goes")
    group.add_argument("-t", "--tag", action="append", default=[], metavar="NAME[:TAG]",
                        help="name the image (repeatable); `docker load` applies every tag")
    group.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                        help="add a label to the image (repeatable)")
    group.add_argument("-o", "--output", metavar="PATH",
                        help="where to write the image tarball (default ./image.tar, none with "
                             "--push; - for stdout)")
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
                             "ignore-error=true (repeatable)")
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
    group = parser.add_argument_group("the local build cache")
    group.add_argument("--no-cache", action="store_true",
                        help="reuse no earlier result: run every step (results are still stored "
                             "for later builds)")
    group.add_argument("--no-cache-filter", action="append", default=[], metavar="STAGE",
                        help="run every step of this stage without reusing results (repeatable)")
    group.add_argument("--cache-dir", metavar="DIR", help="cache root (default "
                        "$PYBUILD_CACHE_DIR, else $XDG_CACHE_HOME/pybuild, else ~/.cache/pybuild)")
    group = parser.add_argument_group("the build log")
    group.add_argument("--progress", choices=("auto", "tty", "plain", "quiet", "json"),
                        default="auto",
                        help="build log style on stderr (default auto: tty at a terminal unless "
                             "NO_COLOR or TERM=dumb, else plain); tty: a live view of the steps; "
                             "plain: BuildKit's plain lines; json: one JSON object per event "
                             "and line")
    group.add_argument("-q", "--quiet", action="store_true",
                        help="print only the image ID (same as --progress=quiet)")
    group.add_argument("--trace", metavar="FILE",
                        help="write the build's timeline to FILE in Chrome's trace-event format "
                             "(open it in Perfetto or chrome://tracing), also when it fails")
    parser.add_argument("--version", action="version", version=f"pybuild {__version__}")
    return parser


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


def _build_command(argv: list[str]) -> int:
    options = _build_parser().parse_args(argv)
    from builder.api import BuildRequest, build
    from builder.errors import NotSupported, UsageError
    from builder.limits import parse_limits
    from builder.progress.modes import sink_for
    from builder.units import human_size
    from grammar.errors import DockerfileError
    from layers.compression import Compression
    from layers.errors import LayerError
    # The objects of the modules just imported live as long as the process: the collector need
    # not walk them again (30 ms of a cached rebuild with 20,000 files went to full collections).
    gc.freeze()

    if not os.path.isdir(options.context):
        return _usage(f"context {options.context!r} is not a directory")
    if options.output == "-" and sys.stdout.isatty():
        return _usage("refusing to write an image tarball to a terminal; use -o FILE or a pipe")
    if options.platform:
        from layers.platform import host_platform
        host = host_platform()
        if options.platform.split("/")[:2] != [host.os, host.architecture]:
            return _usage(f"--platform {options.platform}: only the host platform {host} can be built")
    contexts = {}
    if options.build_context:
        from builder.sources.baseimage import parse_build_context
        try:
            contexts = dict(parse_build_context(item) for item in options.build_context)
        except ValueError as error:
            return _usage(str(error))
    secrets, ssh = {}, {}
    if options.secret or options.ssh:
        from builder.sources.secrets import parse_secret, parse_ssh
        try:
            secrets = {s.id: s for s in map(parse_secret, options.secret)}
            ssh = {s.id: s for s in map(parse_ssh, options.ssh)}
        except ValueError as error:
            return _usage(str(error))
    try:
        limits = parse_limits(options.memory, options.cpus, options.pids_limit)
    except ValueError as error:
        return _usage(str(error))
    for option in options.security_opt:
        if option.replace(":", "=", 1) not in ("seccomp=unconfined", "seccomp=default"):
            return _usage(f"--security-opt {option}: only seccomp=unconfined (and "
                          "seccomp=default) are supported")
    if options.push and not options.tag:
        return _usage("--push needs at least one -t NAME[:TAG] to push to")
    # Files written after the build are checked before it, not after minutes of work.
    output = options.output or (None if options.push or options.load else "image.tar")
    for option, path in (("--trace", options.trace), ("--metadata-file", options.metadata_file),
                         ("-o", None if output == "-" else output),
                         ("--iidfile", options.iidfile)):
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            return _usage(f"{option} {path}: its directory does not exist")
        if path and os.path.isdir(path):
            inside = f" (-o {os.path.join(path, 'image.tar')})" if option == "-o" else ""
            return _usage(f"{option} {path}: is a directory; name the file in it{inside}")
    cache_dir = options.cache_dir or os.environ.get("PYBUILD_CACHE_DIR")
    if cache_dir and os.path.exists(cache_dir) and not os.path.isdir(cache_dir):
        where = "--cache-dir" if options.cache_dir else "PYBUILD_CACHE_DIR"
        return _usage(f"{where} {cache_dir}: not a directory")
    docker = None
    if options.load:
        if options.output == "-":
            return _usage("--load cannot load a tarball written to stdout (-o -)")
        from builder.output.dockerload import docker_command
        docker = docker_command()
        if docker is None:
            _failed("--load needs the docker command (none at /usr/bin/docker or on PATH)",
                    options.progress)
            return EXIT_FAILURE
    caches = {"--cache-from": (), "--cache-to": ()}
    if options.cache_from or options.cache_to:
        from builder.cache.spec import parse_cache_spec
        try:
            caches = {option: tuple(parse_cache_spec(text, option) for text in values)
                      for option, values in (("--cache-from", options.cache_from),
                                             ("--cache-to", options.cache_to))}
        except UsageError as error:
            return _usage(str(error))
    text = None
    if options.file == "-":
        text = sys.stdin.read()
    source_date_epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if source_date_epoch is not None and not source_date_epoch.isdigit():
        return _usage(f"SOURCE_DATE_EPOCH={source_date_epoch!r} is not a whole number of seconds")
    request = BuildRequest(
        context=options.context, dockerfile=None if options.file in (None, "-") else options.file,
        dockerfile_text=text, tags=tuple(options.tag), build_args=_build_args(options.build_arg),
        target=options.target, labels=_labels(options.label), output=output,
        compression=Compression[options.compression.upper()],
        cache_dir=options.cache_dir or "",
        iidfile=options.iidfile, network="none" if options.network == "none" else "host",
        build_contexts=contexts, no_cache=options.no_cache, limits=limits,
        secrets=secrets, ssh=ssh,
        pull=options.pull, push=options.push,
        insecure_registries=frozenset(options.insecure_registry),
        registry_timeout=options.registry_timeout,
        cache_from=caches["--cache-from"], cache_to=caches["--cache-to"],
        no_cache_filter=tuple(name.lower() for name in options.no_cache_filter),
        isolation=options.isolation, docker_load=docker,
        entitlements=frozenset(options.allow),
        seccomp=not any(option.replace(":", "=", 1) == "seccomp=unconfined"
                        for option in options.security_opt),
        source_date_epoch=int(source_date_epoch) if source_date_epoch else None)
    quiet = options.quiet or options.progress == "quiet"
    sinks = [sink_for("quiet" if quiet else options.progress)]
    if options.trace:
        from builder.progress.trace import TraceSink
        sinks.append(TraceSink(options.trace))
    terminated = []

    def on_sigterm(number, frame):
        """SIGTERM unwinds like Ctrl-C: the running RUN is killed and temp files removed."""
        terminated.append(number)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        result = build(request, *sinks)
        if options.metadata_file:
            from builder.output.metadatafile import write_metadata
            write_metadata(options.metadata_file, result)
    except DockerfileError as error:
        _failed(error.render(), options.progress)
        return EXIT_USAGE if isinstance(error, NotSupported) else EXIT_FAILURE
    except (LayerError, OSError) as error:
        _failed(str(error), options.progress)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("ERROR: terminated" if terminated else "ERROR: interrupted", file=sys.stderr)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    except Exception as error:  # a bug in pybuild: say so briefly, the traceback on request
        if os.environ.get("PYBUILD_DEBUG"):
            raise
        print(f"ERROR: internal error: {type(error).__name__}: {error} (this is a pybuild bug; "
              "PYBUILD_DEBUG=1 shows the traceback)", file=sys.stderr)
        return EXIT_FAILURE
    if quiet:
        print(result.image_id)
    elif options.progress == "json":
        import dataclasses
        import json
        print(json.dumps({"event": "BuildFinished", **dataclasses.asdict(result)}), file=sys.stderr)
    else:
        names = ", ".join(result.tags) or "untagged"
        where = output or ("docker" if options.load else "pushed")
        print(f"built {result.image_id} ({names}) -> {where}: {result.steps_run} steps "
              f"run, {result.steps_cached} cached, {human_size(result.size)}, {result.seconds:.1f}s",
              file=sys.stderr)
    return 0


def _failed(message: str, progress: str) -> None:
    """The last words of a failed build: an `ERROR:` line, or a BuildFailed event in JSON."""
    from builder.progress.sinks import shown
    message = shown(message)
    if progress == "json":
        import json
        print(json.dumps({"event": "BuildFailed", "error": message}), file=sys.stderr)
    else:
        print(f"ERROR: {message}", file=sys.stderr)


def _usage(message: str) -> int:
    print(f"pybuild: {message}", file=sys.stderr)
    return EXIT_USAGE


def _parse_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="pybuild parse",
                                     description="Print a Dockerfile's instructions as JSON.")
    parser.add_argument("-f", "--file", default="Dockerfile", metavar="FILE",
                        help="the Dockerfile (default ./Dockerfile; - reads stdin)")
    options = parser.parse_args(argv)
    from grammar.dump import to_data
    from grammar.errors import DockerfileError
    from grammar.parser import parse
    from layers.image import dumps
    try:
        if options.file == "-":
            text, name = sys.stdin.read(), "Dockerfile"
        else:
            with open(options.file, encoding="utf-8", errors="surrogateescape") as handle:
                text, name = handle.read(), os.path.basename(options.file)
    except OSError as error:
        return _usage(f"cannot read {options.file}: {error.strerror}")
    try:
        dockerfile = parse(text, name)
    except DockerfileError as error:
        print(f"ERROR: {error.in_source(text, name).render()}", file=sys.stderr)
        return EXIT_FAILURE
    print(dumps(to_data(dockerfile), indent=2).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
