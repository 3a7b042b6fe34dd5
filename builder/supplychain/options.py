"""`--sbom`, `--provenance` and `--attest` as `docker buildx build` reads them: `--sbom=true` is
`--attest type=sbom`, `--provenance=mode=max` is `--attest type=provenance,mode=max`; false (or
`disabled=true`) turns one off. Without any provenance flag, buildx's default applies: `mode=min`
provenance, which only pushes and OCI archives carry (BUILDX_NO_DEFAULT_ATTESTATIONS=1 turns
it off)."""
from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass, replace

_TRUE, _FALSE = ("true", "1", "t", ""), ("false", "0", "f")


@dataclass(frozen=True)
class Attestations:
    """What to attach: an SBOM, provenance ("" none, "min" or "max"), and provenance's
    `version` (v0.2, buildx's default, or v1) and `builder-id` ("": pybuild's own).
    `default_provenance`: the provenance was not asked for but is buildx's default, so only
    pushes and OCI archives carry it, as BuildKit drops it from docker exports."""

    sbom: bool = False
    provenance: str = ""
    provenance_version: str = "v0.2"
    builder_id: str = ""
    default_provenance: bool = False


def parse_attestations(sbom: str | None, provenance: str | None, attest: list[str],
                       no_default: bool = False) -> Attestations:
    """The attestations the flags ask for, with buildx's default provenance unless
    `no_default` (BUILDX_NO_DEFAULT_ATTESTATIONS); ValueError naming the flag for a usage
    error."""
    specs = [(f"--attest {text}", text) for text in attest]
    if sbom is not None:
        specs.append((f"--sbom={sbom}", _shorthand("sbom", sbom)))
    if provenance is not None:
        specs.append((f"--provenance={provenance}", _shorthand("provenance", provenance)))
    found, asked = Attestations(), False
    for flag, text in specs:
        fields = dict(_pairs(flag, text))
        kind = fields.pop("type", "")
        if kind not in ("sbom", "provenance"):
            raise ValueError(f"{flag}: type= must be sbom or provenance")
        disabled = _bool(flag, fields.pop("disabled", "false"))
        if kind == "sbom":
            unknown = set(fields) - {"generator"}
            if fields.get("generator"):
                raise ValueError(f"{flag}: pybuild has its own SBOM generator; "
                                 "generator= (a scanner image) is not supported")
            found = replace(found, sbom=not disabled)
        else:
            asked = True
            mode = fields.pop("mode", "min")
            version = fields.pop("version", "v0.2")
            builder_id = fields.pop("builder-id", "")
            unknown = set(fields)
            if mode not in ("min", "max"):
                raise ValueError(f"{flag}: mode={mode} is not min or max")
            if version not in ("v0.2", "v1"):
                raise ValueError(f"{flag}: version={version} is not v0.2 or v1")
            found = replace(found, provenance="" if disabled else mode,
                            provenance_version=version, builder_id=builder_id)
        if unknown:
            raise ValueError(f"{flag}: unknown key {', '.join(sorted(unknown))}")
    if not asked and not no_default:
        found = replace(found, provenance="min", default_provenance=True)
    return found


def no_default_attestations(environ: Mapping[str, str]) -> bool:
    """BUILDX_NO_DEFAULT_ATTESTATIONS as buildx reads it (a Go boolean)."""
    return environ.get("BUILDX_NO_DEFAULT_ATTESTATIONS", "").strip().lower() in ("1", "t", "true")


def _shorthand(kind: str, value: str) -> str:
    """`--sbom=true` / `--provenance=mode=max` as an --attest value."""
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return f"type={kind}"
    if lowered in _FALSE:
        return f"type={kind},disabled=true"
    return f"type={kind},{value}"


def _pairs(flag: str, text: str) -> list[tuple[str, str]]:
    try:
        fields = next(csv.reader([text]), [])
    except csv.Error as error:
        raise ValueError(f"{flag}: {error}") from None
    pairs = []
    for field in fields:
        key, equals, value = field.partition("=")
        if not equals:
            raise ValueError(f"{flag}: {field!r} is not KEY=VALUE")
        pairs.append((key.strip().lower(), value.strip()))
    return pairs


def _bool(flag: str, value: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ValueError(f"{flag}: {value} is not true or false")
