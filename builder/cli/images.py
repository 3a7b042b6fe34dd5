"""`pybuild load`, `pybuild images`, `pybuild rmi`, `pybuild push`, `pybuild history`, `pybuild
inspect`, `pybuild sbom`: the local image store from the command line, shaped like the docker commands of the same
names (what history and inspect show is builder/cli/history.py).

Each verb is a function of its argument list returning the exit status: 0 success, 1 failure
(an `ERROR:` line on stderr, never a traceback), 2 usage error (argparse exits), 130 interrupted.
A load reads and verifies the whole archive before it tags anything, so a bad archive leaves the
store's tags as they were.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import asdict, replace

from builder.cli.options import add_progress_options, add_registry_options
from builder.units import human_size
from layers.archive_reader import ArchiveEntry, read_archive
from layers.errors import LayerError
from layers.imagestore import ImageStore, StoredImage
from layers.reference import parse_reference
from layers.snapshots import SnapshotStore

EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 1, 130, 141
_IMAGE_ID = re.compile(r"(?:sha256:)?([0-9a-f]{1,64})")


def _verb(command: Callable[[list[str]], int]) -> Callable[[list[str]], int]:
    """A verb's failures as one `ERROR:` line and an exit status, never a traceback. A reader
    that stops early (`pybuild history IMAGE | head`) ends it quietly, as SIGPIPE would (141)."""
    @functools.wraps(command)
    def run(argv: list[str]) -> int:
        try:
            status = command(argv)
            sys.stdout.flush()
            return status
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing to flush
            return EXIT_BROKEN_PIPE
        except (LayerError, OSError) as error:
            return _fail(error)
        except KeyboardInterrupt:
            return _fail("interrupted", EXIT_INTERRUPTED)
    return run


@_verb
def load_command(argv: list[str]) -> int:
    parser = _parser("load", "Add the images of a docker-save archive or an OCI image layout "
                     "(tar or directory, layers plain, gzip or zstd) to the local image store, "
                     "with all their tags.")
    parser.add_argument("-i", "--input", metavar="ARCHIVE",
                        help="the archive or OCI layout directory (default: stdin)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="print nothing on success (no log, no `Loaded image:` lines)")
    add_progress_options(parser, "load")
    options = parser.parse_args(argv)
    path = options.input
    if path is None:
        if sys.stdin.isatty():
            return _fail("no archive given: use -i ARCHIVE, or pipe one in")
        path = "/dev/stdin"
    if options.trace and not os.path.isdir(os.path.dirname(os.path.abspath(options.trace))):
        return _fail(f"--trace {options.trace}: its directory does not exist", 2)
    store = _store(options)
    try:
        entries = _load(path, store, options)
    except (LayerError, OSError) as error:
        return _fail(error, progress="quiet" if options.quiet else options.progress,
                     event="LoadFailed")
    for entry in entries:
        store.put(entry.config, entry.names, entry.digests)
    if not options.quiet:
        for entry in entries:
            for name in entry.names:
                print(f"Loaded image: {name.familiar()}")
            if not entry.names:
                print(f"Loaded image ID: {entry.image_id}")
                for tag in entry.ref_names:
                    print(f"note: {entry.image_id[7:19]} is annotated only with the tag {tag!r}, "
                          f"not a name; build on it with --build-context "
                          f"NAME=oci-layout://{os.path.abspath(path)}:{tag}", file=sys.stderr)
    return 0


def _load(path: str, store: ImageStore, options: argparse.Namespace) -> tuple[ArchiveEntry, ...]:
    """Read the archive into the store, each layer read a step of the log (`loading layer
    sha256:...`, with its entries unpacked and bytes read) on stderr, as a build logs its
    steps; layers the store has are not read, and are no steps."""
    from builder.progress.modes import progress_sinks
    from builder.progress.sinks import Log
    from builder.progress.unpacks import layer_steps
    log = Log(*progress_sinks("quiet" if options.quiet else options.progress, options.trace,
                              "load", "Loading"))
    try:
        return read_archive(path, store.blobs, SnapshotStore(store.root),
                            layer_steps(log, "loading layer"))
    except BaseException as error:
        for number in log.open_steps():
            log.failed(number, str(error) or type(error).__name__)
        raise
    finally:
        log.finish()


@_verb
def images_command(argv: list[str]) -> int:
    parser = _parser("images", "List the images of the local image store.")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only image IDs")
    options = parser.parse_args(argv)
    store = _store(options)
    rows = [(_repository(image), image.ref.tag if image.ref else "<none>", image.image_id[7:19],
             human_size(_size(store, image), significant=3)) for image in store.list()]
    if options.quiet:
        for image_id in dict.fromkeys(row[2] for row in rows):
            print(image_id)
        return 0
    rows.insert(0, ("REPOSITORY", "TAG", "IMAGE ID", "SIZE"))
    first, second, third = (max(len(row[i]) for row in rows) for i in range(3))
    for repository, tag, image_id, size in rows:
        print(f"{repository:<{first}}   {tag:<{second}}   {image_id:<{third}}   {size}")
    return 0


@_verb
def rmi_command(argv: list[str]) -> int:
    parser = _parser("rmi", "Remove images from the local image store: a NAME[:TAG] removes that "
                     "tag (and the image with its last tag), an image ID the image and all its "
                     "tags. Layers stay in the cache, which other images may share.")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="NAME[:TAG] or image ID")
    options = parser.parse_args(argv)
    store = _store(options)
    status = 0
    for text in options.images:
        if not _remove(store, text):
            status = _fail(f"no such image: {text}")
    return status


@_verb
def push_command(argv: list[str]) -> int:
    parser = _parser("push", "Push an image of the local image store to the registry its name "
                     "says (docker.io when it names none), with the credentials of "
                     "~/.docker/config.json. Layers already there are not sent again.")
    parser.add_argument("image", metavar="NAME[:TAG]", help="the image, as tagged in the store")
    add_registry_options(parser)
    parser.add_argument("--compression", choices=("gzip", "zstd"), default="gzip",
                        help="layer compression (default gzip, which every client reads; zstd "
                             "pushes an OCI manifest)")
    options = parser.parse_args(argv)
    try:
        ref = parse_reference(options.image)
    except ValueError as error:
        return _fail(error, 2)
    store = _store(options)
    image = store.get(ref)
    if image is None:
        return _fail(f"no such image in the local image store: {ref.familiar()}")
    from builder.output.push import push
    from layers.compression import Compression
    from layers.registry.sessions import session_for
    session = session_for(ref, insecure_registries=frozenset(options.insecure_registry),
                          warn=lambda line: print(f"WARNING: {line}", file=sys.stderr),
                          timeout=options.registry_timeout)
    digest = push(ref, image.config_bytes, store.blobs, Compression(options.compression), session)
    print(f"{ref.familiar()}: digest: {digest}")
    return 0


@_verb
def history_command(argv: list[str]) -> int:
    parser = _image_parser("history", "Show how an image of the local image store was made, "
                           "newest step first, with each layer's size also drawn as a bar.")
    parser.add_argument("--no-trunc", action="store_true", help="do not shorten CREATED BY")
    parser.add_argument("--json", action="store_true",
                        help="print a JSON list of the entries, newest first")
    options = parser.parse_args(argv)
    from builder.cli.history import history_rows, print_history
    store = _store(options)
    rows = history_rows(_find(store, options.image), lambda diff_id: _layer_size(store, diff_id))
    if options.json:
        print(json.dumps([asdict(row) for row in rows], indent=2, ensure_ascii=False))
    else:
        print_history(rows, options.no_trunc)
    return 0


@_verb
def inspect_command(argv: list[str]) -> int:
    parser = _image_parser("inspect", "Print an image of the local image store as JSON, as "
                           "`docker image inspect` does: its config with its ID, tags, size and "
                           "layers.")
    options = parser.parse_args(argv)
    from builder.cli.history import inspect_document
    store = _store(options)
    image = _find(store, options.image)
    tags = [other.ref.familiar() for other in store.list()
            if other.ref and other.manifest_digest == image.manifest_digest]
    print(json.dumps([inspect_document(image, tags, _size(store, image))], indent=4,
                     ensure_ascii=False))
    return 0


@_verb
def sbom_command(argv: list[str]) -> int:
    parser = _image_parser("sbom", "Print the SPDX 2.3 JSON SBOM of an image of the local store: "
                           "the packages its files declare (dpkg, apk, rpm, Python, npm), as "
                           "`--sbom=true` attaches it.")
    options = parser.parse_args(argv)
    from builder.supplychain.sbom import image_sbom
    store = _store(options)
    image = _find(store, options.image)
    name = image.ref.full() if image.ref else image.image_id
    print(json.dumps(image_sbom(image.config, store.blobs, name), indent=2, ensure_ascii=False))
    return 0


def _find(store: ImageStore, text: str) -> StoredImage:
    """The image `text` names: NAME[:TAG], NAME@DIGEST, or an image ID or a unique prefix of one."""
    try:
        image = store.get(parse_reference(text))
    except ValueError:
        image = None
    image = image or _by_id(store, text)
    if image is None:
        raise LayerError(f"no such image: {text}")
    return image


def _by_id(store: ImageStore, text: str) -> StoredImage | None:
    """The image whose ID is `text` or starts with it; a prefix of several is an error."""
    match = _IMAGE_ID.fullmatch(text)
    if match is None:
        return None
    found = {i.manifest_digest: i for i in store.list() if i.image_id[7:].startswith(match[1])}
    if len(found) > 1:
        raise LayerError(f"{text} is ambiguous: it starts {len(found)} image IDs")
    return next(iter(found.values()), None)


def _remove(store: ImageStore, text: str) -> bool:
    """Remove by tag, else by image ID (or a unique prefix of one); False if nothing matched."""
    try:
        ref = parse_reference(text)
    except ValueError:
        ref = None
    if ref is not None and ref.tag and not ref.digest:
        removed = store.remove(ref)
        if removed is not None:
            print(f"Untagged: {ref.familiar()}")
            if store.get(replace(ref, digest=removed.manifest_digest)) is None:
                print(f"Deleted: {removed.image_id}")
            return True
    image = _by_id(store, text)
    if image is None:
        return False
    for tag in store.delete(image.manifest_digest):
        print(f"Untagged: {tag.familiar()}")
    print(f"Deleted: {image.image_id}")
    return True


def _parser(verb: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"pybuild {verb}", description=description)
    parser.add_argument("--cache-dir", metavar="DIR", help="cache root (default "
                        "$PYBUILD_CACHE_DIR, else $XDG_CACHE_HOME/pybuild, else ~/.cache/pybuild)")
    return parser


def _image_parser(verb: str, description: str) -> argparse.ArgumentParser:
    """The parser of a verb about one image, named as `_find` takes it."""
    parser = _parser(verb, description)
    parser.add_argument("image", metavar="IMAGE",
                        help="NAME[:TAG], NAME@DIGEST, or an image ID (or a unique prefix of one)")
    return parser


def _store(options: argparse.Namespace) -> ImageStore:
    from builder.cache.root import default_cache_dir, secure_cache_dir
    return ImageStore(secure_cache_dir(os.path.abspath(options.cache_dir or default_cache_dir())))


def _repository(image: StoredImage) -> str:
    return image.ref.familiar_name() if image.ref else "<none>"


def _size(store: ImageStore, image: StoredImage) -> int:
    """What the image occupies unpacked: its layer tars (stored uncompressed) added up."""
    return sum(_layer_size(store, d) for d in image.diff_ids)


def _layer_size(store: ImageStore, diff_id: str) -> int:
    return os.path.getsize(store.blobs.path(diff_id))


def _fail(error: object, status: int = EXIT_FAILURE, *, progress: str = "plain",
          event: str = "") -> int:
    """Report `error` as the verb's last words (as the `event` object under `--progress json`)."""
    from builder.progress.sinks import last_words
    if isinstance(error, OSError) and error.strerror:
        error = f"{error.filename}: {error.strerror}" if error.filename else error.strerror
    last_words(str(error), progress, event)
    return status
