"""`--metadata-file FILE`: what a build made, as JSON for the CI steps after it (deploy the digest,
report cache use), in buildx's keys where buildx has them and `pybuild.*` keys for the rest."""
from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from builder.output.atomicfile import write_atomically
from builder.request import BuildResult


def build_metadata(result: BuildResult) -> dict[str, Any]:
    """`containerimage.digest` is the tarball's manifest digest, else (a push without a tarball)
    the pushed manifest's; `containerimage.config.digest` is the image ID; `image.name` the tags,
    comma-separated; a layer's size is its size in the tarball."""
    digest = result.manifest_digest or (result.pushed[0][1] if result.pushed else "")
    data: dict[str, Any] = {"containerimage.config.digest": result.image_id}
    if digest:
        data["containerimage.digest"] = digest
    if result.tags:
        data["image.name"] = ",".join(result.tags)
    data.update({
        "pybuild.layers": [{"diff_id": layer, "size": size}
                           for layer, size in zip(result.layers, result.layer_sizes)],
        "pybuild.steps_run": result.steps_run,
        "pybuild.steps_cached": result.steps_cached,
        "pybuild.seconds": round(result.seconds, 3),
        "pybuild.steps": [asdict(step) for step in result.steps],
        "pybuild.pushed": [{"name": name, "digest": digest} for name, digest in result.pushed],
    })
    return data


def write_metadata(path: str, result: BuildResult) -> None:
    write_atomically(path, json.dumps(build_metadata(result), indent=2,
                                      ensure_ascii=False).encode() + b"\n")
