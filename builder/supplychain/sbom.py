"""The SBOM of an image of the build or of the local store: its packages, read from its layers,
as an SPDX document and as the in-toto predicate BuildKit attaches."""
from __future__ import annotations

from typing import Any

from builder.supplychain.attestation import Predicate
from builder.supplychain.packages import image_packages
from builder.supplychain.spdx import PREDICATE_TYPE, spdx_document
from layers.blobstore import BlobStore
from layers.image import ImageConfig


def image_sbom(image: ImageConfig, blobs: BlobStore, name: str) -> dict[str, Any]:
    """The SPDX document of `image` (its layers in `blobs`), named `name`, dated as the image
    is (the epoch when it has no date)."""
    packages = image_packages([blobs.path(diff_id) for diff_id in image.diff_ids])
    created = image.created.partition(".")[0].rstrip("Z") + "Z" if image.created \
        else "1970-01-01T00:00:00Z"
    return spdx_document(name, packages, created)


def sbom_predicate(image: ImageConfig, blobs: BlobStore, name: str) -> Predicate:
    return Predicate(PREDICATE_TYPE, image_sbom(image, blobs, name))
