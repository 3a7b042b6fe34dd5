"""The Dockerfile checks of a build: grammar.lint with what only the builder knows (the
context's .dockerignore, what an image reference is), and `# check=error=true`."""
from __future__ import annotations

from collections.abc import Callable, Mapping

from builder.sources.context import load_ignore
from builder.sources.dockerignore import IgnoreMatcher
from grammar import instructions as ins
from grammar.errors import DockerfileError
from grammar.lint import Finding, check_config, lint
from layers.reference import parse_reference

# .dockerignore patterns that leave out every entry of the root, so `COPY . x` copies nothing.
_WHOLE_ROOT = frozenset({"*", "**", "**/*"})


# The build arg that replaces the Dockerfile's `# check=` directive, as in BuildKit.
CHECK_ARG = "BUILDKIT_DOCKERFILE_CHECK"


def dockerfile_checks(dockerfile: ins.Dockerfile, context_dir: str, dockerfile_path: str | None,
                      build_args: Mapping[str, str | None] | None = None) -> list[Finding]:
    """The findings for a Dockerfile built from `context_dir` (`dockerfile_path` as
    load_ignore takes it: None for the default, `-` for stdin)."""
    try:
        matcher = load_ignore(context_dir, dockerfile_path)
    except ValueError:  # a bad .dockerignore: the build says so when it reads the context
        matcher = IgnoreMatcher()
    return lint(dockerfile, ignored=_copy_ignored(matcher), valid_reference=_is_reference,
                check=(build_args or {}).get(CHECK_ARG))


def failure(dockerfile: ins.Dockerfile, findings: list[Finding],
            build_args: Mapping[str, str | None]) -> DockerfileError | None:
    """The error a build with findings ends in under `# check=error=true`, as BuildKit words it,
    placed at the first finding's line; None when it may go on."""
    check = build_args.get(CHECK_ARG)
    check = dockerfile.directives.check if check is None else check
    if not findings or not check_config(check).error:
        return None
    rules = ", ".join(dict.fromkeys(f.rule for f in findings))
    first = findings[0].line
    return DockerfileError(f"lint violation found for rules: {rules}", file=dockerfile.file,
                           line=first, source_line=dockerfile.source_line(first))


def _copy_ignored(matcher: IgnoreMatcher) -> Callable[[str], bool] | None:
    """BuildKit's CopyIgnoredFile verdict: none when there is no pattern or an exception (`!`)
    could re-include a file below an excluded directory; the root only when a pattern leaves
    out all of it."""
    if not matcher.patterns or any(p.exception for p in matcher.patterns):
        return None
    whole_root = any(p.text in _WHOLE_ROOT for p in matcher.patterns)

    def ignored(source: str) -> bool:
        if source in (".", "/"):
            return whole_root
        return matcher.excluded(source)
    return ignored


def _is_reference(name: str) -> bool:
    try:
        parse_reference(name)
    except ValueError:
        return False
    return True
