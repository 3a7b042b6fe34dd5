"""Base images from registries: `FROM alpine` when the local store lacks it, or always with --pull.

A reference is resolved at most once per build, so every stage FROM the same tag gets the same
image even if the tag moves meanwhile. The image is stored as `docker pull` stores it: under its
tag (a digest reference adds no tag), known by its manifest digest and its index's, its layers
uncompressed in the blob store. When the registry cannot be reached and the store has the image,
the build goes on with it and says so.
"""
from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from builder.errors import BuildError
from layers.imagestore import ImageStore, StoredImage
from layers.platform import Platform
from layers.reference import Reference

if TYPE_CHECKING:
    from builder.progress.sinks import Log
    from layers.registry.transport import Session


class Puller:
    """The registry side of FROM for one build: the references resolved so far."""

    def __init__(self, store: ImageStore, sessions: Callable[[Reference], Session],
                 platform: Platform, always: bool, log: Log) -> None:
        self.store = store
        self.sessions = sessions
        self.platform = platform
        self.always = always
        self.log = log
        self.resolved: dict[Reference, StoredImage] = {}

    def image(self, ref: Reference) -> StoredImage | None:
        """The image `ref` names: from the store unless --pull (or it is not there), else pulled.
        None when neither has it; raises BuildError when the registry fails and the store has no
        copy to fall back on."""
        if ref in self.resolved:
            return self.resolved[ref]
        local = self.store.get(ref)
        has = "no copy either"
        if local is not None and not self.platform.matches(
                {"os": local.config.os, "architecture": local.config.architecture,
                 "variant": local.config.variant}):
            # another platform's image of that name: pulled for this one
            has = "it only for " + "/".join(filter(None, (
                local.config.os, local.config.architecture, local.config.variant)))
            local = None
        if local is not None and not (self.always and not ref.digest):
            return local
        from layers.registry.errors import RegistryError  # a store hit needs no registry code
        try:
            image = self._pull(ref)
        except RegistryError as error:
            if local is None:
                if error.status == 404:
                    return None
                raise BuildError(f"cannot pull {ref.familiar()} for {self.platform}: "
                                 f"{error.message}; the local image store ({self.store.dir}) "
                                 f"has {has}") from None
            self.log.warn(f"cannot pull {ref.familiar()} ({error.message}); using the copy in "
                          f"the local image store, {local.manifest_digest}")
            image = local
        self.resolved[ref] = image
        return image

    def _pull(self, ref: Reference) -> StoredImage:
        from layers.registry.errors import RegistryError
        from layers.registry.pull import pull_layers, resolve
        from builder.progress.unpacks import layer_steps
        from layers.snapshots import SnapshotStore
        session = self.sessions(ref)
        found = resolve(session, ref, self.platform)
        # A step of its own, so the log times it and --trace shows it on the pulls track.
        number = self.log.step(f"pulling {ref.familiar()}")
        self.log.info(number, f"{found.manifest_digest} for {self.platform}, "
                              f"{len(found.layers)} layers, "
                              f"{sum(d.size for d in found.layers) / 1e6:.1f}MB")
        try:
            pull_layers(session, ref, found, self.store.blobs,
                        progress=partial(self.log.progress, number),
                        snapshots=SnapshotStore(self.store.root),
                        unpacking=layer_steps(self.log, "unpacking"))
        except RegistryError as error:
            self.log.failed(number, str(error))
            raise
        self.log.done(number)
        digests = [found.manifest_digest] + ([found.index_digest] if found.index_digest else [])
        self.store.put(found.config, refs=[] if ref.digest else [ref], digests=digests)
        image = self.store.get(ref)
        if image is None:  # a digest reference whose manifest pybuild stores under another digest
            raise RegistryError(f"{ref.familiar()} was pulled but cannot be found in the store")
        return image
