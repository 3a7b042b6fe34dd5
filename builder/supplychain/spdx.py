"""An SPDX 2.3 JSON document of an image's packages, shaped as BuildKit's SBOM generator (syft)
writes it, and deterministic: the same packages and time give the same bytes, so a rebuild's
attestation has the same digest."""
from __future__ import annotations

import hashlib
import re
from typing import Any

from builder import __version__
from builder.supplychain.packages import Package

PREDICATE_TYPE = "https://spdx.dev/Document"
_NONE = "NOASSERTION"
_EXPRESSION = re.compile(r"[A-Za-z0-9.+-]+|\(|\)")


def spdx_document(name: str, packages: tuple[Package, ...], created: str) -> dict[str, Any]:
    """The document for image `name`; `created` is an RFC 3339 time (the image's, so a
    reproducible build has a reproducible SBOM)."""
    ids = [_spdx_id(package) for package in packages]
    fingerprint = hashlib.sha256(repr((name, packages)).encode()).hexdigest()
    return {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": name,
        "documentNamespace": f"https://pybuild.invalid/sbom/{fingerprint}",
        "creationInfo": {"creators": [f"Tool: pybuild-{__version__}"], "created": created},
        "packages": [_package(package, spdx_id) for package, spdx_id in zip(packages, ids)],
        "relationships": [{"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES",
                           "relatedSpdxElement": spdx_id} for spdx_id in ids],
    }


def _spdx_id(package: Package) -> str:
    digest = hashlib.sha256(f"{package.purl}\0{package.source}".encode()).hexdigest()[:16]
    clean = "".join(c if c.isalnum() or c in ".-" else "-" for c in package.name)
    return f"SPDXRef-Package-{package.kind}-{clean}-{digest}"


def _package(package: Package, spdx_id: str) -> dict[str, Any]:
    return {
        "name": package.name,
        "SPDXID": spdx_id,
        "versionInfo": package.version,
        "supplier": _NONE,
        "downloadLocation": _NONE,
        "filesAnalyzed": False,
        "sourceInfo": f"acquired package info from {package.source}",
        "licenseConcluded": _NONE,
        "licenseDeclared": _license(package.license),
        "copyrightText": _NONE,
        "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                          "referenceLocator": package.purl}],
    }


def _license(declared: str) -> str:
    """An SPDX license expression as declared, or a LicenseRef- for free text ("MIT License"),
    as syft writes one, since the field only takes expressions."""
    if not declared:
        return _NONE
    tokens = declared.replace("(", " ( ").replace(")", " ) ").split()
    if all(_EXPRESSION.fullmatch(token) for token in tokens):
        return " ".join(tokens).replace("( ", "(").replace(" )", ")")
    return "LicenseRef-" + re.sub(r"[^A-Za-z0-9.-]+", "-", declared).strip("-")
