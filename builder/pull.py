"""Base images from registries: `FROM alpine` when the local store lacks it, or always with --pull.

A reference is resolved at most once per build, so every stage FROM the same tag gets the same
image even if the tag moves meanwhile. The image is stored as `docker pull` stores it: under its
tag (a digest reference adds no tag), known by its manifest digest and its index's, its layers
uncompressed in the blob store. When the registry cannot be reached and the store has the image,
the build goes on with it and says so.
"""
from __future__ import annotations

from collections.abc import Callable

from builder.errors import BuildError
from layers.imagestore import ImageStore, StoredImage
from layers.platform import Platform
from layers.reference import Reference
from layers.registry.errors import RegistryError
from layers.registry.pull import pull_layers, resolve
from layers.registry.transport import Session


class Puller:
    """The registry side of FROM for one build: the references resolved so far."""

    def __init__(self, store: ImageStore, sessions: Callable[[Reference], Session],
                 platform: Platform, always: bool, warn: Callable[[str], None],
                 note: Callable[[str], None]) -> None:
        self.store = store
        self.sessions = sessions
        self.platform = platform
        self.always = always
        self.warn = warn
        self.note = note
        self.resolved: dict[Reference, StoredImage] = {}

    def image(self, ref: Reference) -> StoredImage | None:
        """The image `ref` names: from the store unless --pull (or it is not there), else pulled.
        None when neither has it; raises BuildError when the registry fails and the store has no
        copy to fall back on."""
        if ref in self.resolved:
            return self.resolved[ref]
        local = self.store.get(ref)
        if local is not None and not (self.always and not ref.digest):
            return local
        try:
            image = self._pull(ref)
        except RegistryError as error:
            if local is None:
                if error.status == 404:
                    return None
                raise BuildError(f"cannot pull {ref.familiar()}: {error}") from None
            self.warn(f"cannot pull {ref.familiar()} ({error}); using the copy in the local "
                      f"image store, {local.manifest_digest}")
            image = local
        self.resolved[ref] = image
        return image

    def _pull(self, ref: Reference) -> StoredImage:
        session = self.sessions(ref)
        found = resolve(session, ref, self.platform)
        self.note(f"pulling {ref.familiar()}: {found.manifest_digest} for {self.platform}, "
                  f"{len(found.layers)} layers, {sum(d.size for d in found.layers) / 1e6:.1f}MB")
        pull_layers(session, ref, found, self.store.blobs)
        digests = [found.manifest_digest] + ([found.index_digest] if found.index_digest else [])
        self.store.put(found.config, refs=[] if ref.digest else [ref], digests=digests)
        image = self.store.get(ref)
        if image is None:  # a digest reference whose manifest pybuild stores under another digest
            raise RegistryError(f"{ref.familiar()} was pulled but cannot be found in the store")
        return image
