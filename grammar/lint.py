"""Dockerfile checks, named and worded as BuildKit's build checks, so a warning reads the same
from pybuild as from `docker build` and a `# check=skip=...` directive written for Docker works
here too. A pure function of the parsed Dockerfile; what the grammar cannot know (which context
files .dockerignore leaves out, what an image reference is) the caller may pass in.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from grammar import instructions as ins
from grammar.checks.common import Finding, split_stages
from grammar.checks.stages import stage_checks
from grammar.checks.steps import step_checks
from grammar.checks.text import comments_above, text_checks

__all__ = ["CheckConfig", "Finding", "check_config", "lint"]

# Rules BuildKit runs only when `# check=experimental=NAME` (or `all`) asks for them.
_EXPERIMENTAL = frozenset({"InvalidDefinitionDescription"})
# A `# check=...` comment right above an instruction: its skip and experimental lists add to
# the file's for that instruction.
_CHECK_COMMENT = re.compile(r"check\s*=\s*(\S*).*", re.IGNORECASE)


@dataclass(frozen=True)
class CheckConfig:
    """The `# check=skip=A,B;error=true;experimental=C` directive."""

    skip: frozenset[str] = frozenset()
    error: bool = False
    experimental: frozenset[str] = frozenset()

    def runs(self, rule: str) -> bool:
        if rule in _EXPERIMENTAL:
            return bool({rule, "all"} & self.experimental)
        return not {rule, "all"} & self.skip

    def merged(self, other: CheckConfig) -> CheckConfig:
        return CheckConfig(self.skip | other.skip, self.error,
                           self.experimental | other.experimental)


def check_config(check: str | None) -> CheckConfig:
    """BuildKit's reading of the directive: `;`-separated keys, `,`-separated rule names."""
    values: dict[str, set[str]] = {"skip": set(), "error": set(), "experimental": set()}
    for part in (check or "").split(";"):
        key, _, value = part.partition("=")
        if key.strip() in values:
            values[key.strip()].update(v.strip() for v in value.split(",") if v.strip())
    return CheckConfig(frozenset(values["skip"]), "true" in {v.lower() for v in values["error"]},
                       frozenset(values["experimental"]))


def lint(dockerfile: ins.Dockerfile, *, ignored: Callable[[str], bool] | None = None,
         valid_reference: Callable[[str], bool] | None = None,
         check: str | None = None) -> list[Finding]:
    """The findings of every check the Dockerfile's `# check=` directive (or `check`, which
    replaces it, as the BUILDKIT_DOCKERFILE_CHECK build arg does) and the `# check=` comment
    above an instruction leave on, in the order of the lines. `ignored(path)`: whether the
    context's .dockerignore leaves a COPY source out (CopyIgnoredFile); `valid_reference(name)`:
    whether a base image name is an image reference (InvalidDefaultArgInFrom). Without them,
    those rules do not run."""
    config = check_config(dockerfile.directives.check if check is None else check)
    configs = _instruction_configs(dockerfile, config)
    header, stages = split_stages(dockerfile)
    escape = dockerfile.directives.escape
    findings = (stage_checks(header, stages, escape, valid_reference)
                + step_checks(stages, escape, ignored) + text_checks(dockerfile, stages))
    return sorted((f for f in findings if configs.get(f.line, config).runs(f.rule)),
                  key=lambda f: f.line)


def _instruction_configs(dockerfile: ins.Dockerfile,
                         config: CheckConfig) -> dict[int, CheckConfig]:
    """By line, the configuration of the instructions with a `# check=` comment above them."""
    configs = {}
    for instruction in dockerfile.instructions:
        for comment in comments_above(dockerfile, instruction):
            if match := _CHECK_COMMENT.fullmatch(comment):
                configs[instruction.span.line] = config.merged(check_config(match.group(1)))
                break
    return configs
