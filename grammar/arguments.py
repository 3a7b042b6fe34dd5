"""From keyword, flags and argument text to a typed instruction, with Docker's checks and messages."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Callable

from grammar import instructions as ins
from grammar.durations import parse_duration
from grammar.errors import DockerfileError, Span
from grammar.heredoc import parse_marker
from grammar.mounts import MountError, parse_mount
from grammar.suggest import suggest
from grammar.words import (SPACES, WHITESPACE, NotStringArray, flag_word, parse_json_array,
                           split_whitespace, split_words)

STRING, BOOL, LIST = "string", "bool", "list"

# The flags each instruction accepts (BuildKit's, all of them, so a Dockerfile written for Docker
# parses; builder/ refuses with a clear message the ones pybuild does not implement yet).
FLAGS: dict[str, dict[str, str]] = {
    "FROM": {"platform": STRING},
    "RUN": {"mount": LIST, "network": STRING, "security": STRING, "device": LIST},
    "COPY": {"from": STRING, "chown": STRING, "chmod": STRING, "link": BOOL, "parents": BOOL,
             "exclude": LIST},
    "ADD": {"chown": STRING, "chmod": STRING, "link": BOOL, "keep-git-dir": BOOL,
            "checksum": STRING, "exclude": LIST, "unpack": BOOL},
    "HEALTHCHECK": {"interval": STRING, "timeout": STRING, "start-period": STRING,
                    "start-interval": STRING, "retries": STRING},
}

_STAGE_NAME = re.compile(r"[a-z][a-z0-9-_.]*")
_NETWORKS = ("default", "none", "host")
_SECURITY = ("sandbox", "insecure")
# Go's strconv.ParseInt in base 10: ASCII digits, one optional sign, no `_` separators.
_GO_INT = re.compile(r"[+-]?[0-9]+")


# A place in the file: 1-based line and column.
At = tuple[int, int]


@dataclass(frozen=True)
class FlagText:
    """A flag as BuildKit sees it (continuations removed) and where it starts."""

    text: str
    at: At


@dataclass(frozen=True)
class Site:
    """What an instruction builder needs besides its arguments: where, and the file's rules."""

    keyword: str
    span: Span
    original: str
    escape: str
    lines: tuple[str, ...]
    args_at: At
    heredocs: tuple[ins.Heredoc, ...] = ()

    def error(self, message: str, at: At | None = None, hint: str | None = None) -> DockerfileError:
        """An error on this instruction, pointing at `at` when given, else at its keyword."""
        line, column = at if at else self.keyword_at()
        return DockerfileError(message, file=self.span.file, line=line, column=column,
                               source_line=self.lines[line - 1], hint=hint)

    def keyword_at(self) -> At:
        first = self.lines[self.span.line - 1]
        return self.span.line, len(first) - len(first.lstrip(SPACES)) + 1

    def flag_at(self, name: str) -> At:
        """Where `--name` is written in this instruction (its keyword when it cannot be found)."""
        pattern = re.compile(rf"(?<![\w-])--{re.escape(name)}(?![\w-])", re.IGNORECASE)
        for number in range(self.span.line, self.span.end_line + 1):
            found = pattern.search(self.lines[number - 1])
            if found:
                return number, found.start() + 1
        return self.keyword_at()


Flags = dict[str, "str | bool | list[str]"]


def parse_flags(site: Site, flags: list[FlagText]) -> Flags:
    """Check flags against the instruction's table; values keep their text (unexpanded)."""
    known = FLAGS.get(site.keyword, {})
    parsed: Flags = {}
    for flag in flags:
        word = flag_word(flag.text, site.escape)[2:]
        if not word:
            continue  # `--""` reads as `--`, which BuildKit drops
        name, has_value, value = word.partition("=")
        kind = known.get(name)
        if kind is None:
            close = suggest(name, known, case_sensitive=True)
            raise site.error(f"unknown flag: --{name} for {site.keyword}", flag.at,
                             hint=f"did you mean --{close}?" if close else None)
        if name in parsed and kind != LIST:
            raise site.error(f"duplicate flag specified: --{name}", flag.at)
        # A bool flag may stand alone; `--link=` is as much missing its value as `--from` is.
        if kind == BOOL and has_value and not value or kind != BOOL and not has_value:
            raise site.error(f"missing a value on flag: --{name}", flag.at)
        if kind == BOOL:
            if value.lower() not in ("", "true", "false"):
                raise site.error(f"expecting boolean value for flag --{name}, not: {value}",
                                 flag.at)
            parsed[name] = value.lower() != "false"
        elif kind == LIST:
            parsed.setdefault(name, [])
            parsed[name].append(value)  # type: ignore[union-attr]
        else:
            parsed[name] = value
    return parsed


def command(site: Site, args: str) -> ins.Command:
    """JSON exec form when the text is a JSON array of strings, else shell form (Docker's rule:
    invalid JSON is shell form, a JSON array of non-strings is an error)."""
    try:
        exec_form = parse_json_array(args)
    except NotStringArray as error:
        raise site.error(str(error), site.args_at) from None
    if exec_form is not None:
        return ins.Command(tuple(exec_form), shell=False)
    return ins.Command((args,), shell=True)


def json_or_words(site: Site, args: str) -> list[str]:
    try:
        exec_form = parse_json_array(args)
    except NotStringArray as error:
        raise site.error(str(error), site.args_at) from None
    return exec_form if exec_form is not None else split_whitespace(args)


def quoted(text: str) -> str:
    """A value in a message, quoted as Go's `%q` quotes it (BuildKit's messages use it)."""
    return json.dumps(text, ensure_ascii=False)


def key_values(site: Site, args: str) -> tuple[ins.KeyValue, ...]:
    """ENV and LABEL: `k=v k2="v 2"`, or the legacy `k value with spaces`."""
    words = split_words(args, site.escape)
    if not words:
        raise site.error(f"{site.keyword} requires at least one argument")
    if "=" not in words[0]:
        parts = WHITESPACE.split(args.strip(SPACES), maxsplit=1)
        if len(parts) < 2:
            raise site.error(f"{site.keyword} must have two arguments", site.args_at,
                             hint=f"write {site.keyword} {parts[0]}=VALUE")
        pairs = [ins.KeyValue(parts[0], parts[1])]
    else:
        pairs = []
        for word in words:
            if "=" not in word:
                raise site.error(f"syntax error - can't find = in {quoted(word)}. "
                                 "Must be of the form: name=value", site.args_at)
            key, _, value = word.partition("=")
            pairs.append(ins.KeyValue(key, value))
    if any(not pair.key for pair in pairs):
        raise site.error(f"{site.keyword} names can not be blank", site.args_at)
    return tuple(pairs)


def _one(site: Site, args: str) -> str:
    if not args:
        raise site.error(f"{site.keyword} requires exactly one argument")
    return args


def _some(site: Site, values: list[str]) -> list[str]:
    if not values:
        raise site.error(f"{site.keyword} requires at least one argument")
    return values


def build_from(site: Site, flags: Flags, args: str) -> ins.From:
    words = split_whitespace(args)
    if len(words) not in (1, 3):
        raise site.error("FROM requires either one or three arguments", site.args_at)
    name = None
    if len(words) == 3:
        if words[1].lower() != "as":
            raise site.error(f"FROM: expected AS, found {quoted(words[1])}", site.args_at)
        name = words[2].lower()
        if not _STAGE_NAME.fullmatch(name):
            raise site.error(f"invalid name for build stage: {quoted(words[2])}, name can't "
                             "start with a number or contain symbols", site.args_at)
    return ins.From(site.span, site.original, image=words[0], name=name,
                    platform=flags.get("platform"))  # type: ignore[arg-type]


def build_run(site: Site, flags: Flags, args: str) -> ins.Run:
    if not args:
        raise site.error("RUN requires at least one argument")
    network, security = flags.get("network"), flags.get("security")
    if network is not None and network not in _NETWORKS:
        raise site.error(f"invalid network mode {quoted(str(network))}", site.flag_at("network"),
                         hint="one of " + ", ".join(_NETWORKS))
    if security is not None and security not in _SECURITY:
        raise site.error(f"security {quoted(str(security))} is not valid", site.flag_at("security"),
                         hint="one of " + ", ".join(_SECURITY))
    mounts = tuple(flags.get("mount", ()))  # type: ignore[arg-type]
    for text in mounts:
        try:
            parse_mount(text)
        except MountError as error:
            raise site.error(f"--mount={text}: {error}", site.flag_at("mount")) from None
    return ins.Run(site.span, site.original, command(site, args), heredocs=site.heredocs,
                   mounts=mounts, devices=tuple(flags.get("device", ())),
                   network=network, security=security)  # type: ignore[arg-type]


def build_cmd(site: Site, flags: Flags, args: str) -> ins.Cmd:
    """An empty CMD is accepted, as Docker accepts it (an empty shell command)."""
    return ins.Cmd(site.span, site.original, command(site, args))


def build_entrypoint(site: Site, flags: Flags, args: str) -> ins.Entrypoint:
    return ins.Entrypoint(site.span, site.original, command(site, args))


def build_label(site: Site, flags: Flags, args: str) -> ins.Label:
    return ins.Label(site.span, site.original, key_values(site, args))


def build_env(site: Site, flags: Flags, args: str) -> ins.Env:
    return ins.Env(site.span, site.original, key_values(site, args))


def build_maintainer(site: Site, flags: Flags, args: str) -> ins.Maintainer:
    return ins.Maintainer(site.span, site.original, _one(site, args))


def build_expose(site: Site, flags: Flags, args: str) -> ins.Expose:
    return ins.Expose(site.span, site.original, tuple(_some(site, split_whitespace(args))))


def _copy_fields(site: Site, flags: Flags, args: str) -> dict:
    words = json_or_words(site, args)
    if len(words) < 2:
        raise site.error(f"{site.keyword} requires at least two arguments, but only "
                         f"{len(words)} provided", site.args_at,
                         hint="the last argument is the destination")
    if parse_marker(words[-1]):
        raise site.error(f"{site.keyword} cannot accept a heredoc as a destination", site.args_at)
    return dict(sources=tuple(words[:-1]), dest=words[-1], heredocs=site.heredocs,
                chown=flags.get("chown"), chmod=flags.get("chmod"),
                link=bool(flags.get("link", False)), excludes=tuple(flags.get("exclude", ())))


def build_copy(site: Site, flags: Flags, args: str) -> ins.Copy:
    return ins.Copy(site.span, site.original, **_copy_fields(site, flags, args),
                    from_=flags.get("from"), parents=bool(flags.get("parents", False)))  # type: ignore[arg-type]


def build_add(site: Site, flags: Flags, args: str) -> ins.Add:
    return ins.Add(site.span, site.original, **_copy_fields(site, flags, args),
                   keep_git_dir=bool(flags.get("keep-git-dir", False)),
                   checksum=flags.get("checksum"),  # type: ignore[arg-type]
                   unpack=flags.get("unpack"))  # type: ignore[arg-type]


def build_volume(site: Site, flags: Flags, args: str) -> ins.Volume:
    paths = [path.strip(SPACES) for path in _some(site, json_or_words(site, args))]
    if not all(paths):
        raise site.error("VOLUME specified can not be an empty string", site.args_at)
    return ins.Volume(site.span, site.original, tuple(paths))


def build_user(site: Site, flags: Flags, args: str) -> ins.User:
    return ins.User(site.span, site.original, _one(site, args))


def build_workdir(site: Site, flags: Flags, args: str) -> ins.Workdir:
    return ins.Workdir(site.span, site.original, _one(site, args))


def build_arg(site: Site, flags: Flags, args: str) -> ins.Arg:
    decls = []
    for word in _some(site, split_words(args, site.escape)):
        name, has_default, default = word.partition("=")
        if not name:
            raise site.error("ARG names can not be blank", site.args_at)
        decls.append(ins.ArgDecl(name, default if has_default else None))
    return ins.Arg(site.span, site.original, tuple(decls))


def build_stopsignal(site: Site, flags: Flags, args: str) -> ins.Stopsignal:
    return ins.Stopsignal(site.span, site.original, _one(site, args))


def build_shell(site: Site, flags: Flags, args: str) -> ins.Shell:
    try:
        exec_form = parse_json_array(args)
    except NotStringArray as error:
        raise site.error(str(error), site.args_at) from None
    if exec_form is None:
        raise site.error("SHELL requires the arguments to be in JSON form", site.args_at,
                         hint='write SHELL ["/bin/sh", "-c"]')
    return ins.Shell(site.span, site.original, tuple(_some(site, exec_form)))


def build_healthcheck(site: Site, flags: Flags, args: str) -> ins.Healthcheck:
    """`HEALTHCHECK NONE` or `HEALTHCHECK [options] CMD command`. As in BuildKit, NONE ignores
    the options, and an empty JSON array after it counts as no arguments."""
    kind, rest = (WHITESPACE.split(args.strip(SPACES), maxsplit=1) + [""])[:2]
    if not kind:
        raise site.error("HEALTHCHECK requires at least one argument")
    test = command(site, rest) if rest else None
    if kind.upper() == "NONE":
        if test and test.args:
            raise site.error("HEALTHCHECK NONE takes no arguments", site.args_at)
        return ins.Healthcheck(site.span, site.original, None)
    if kind.upper() != "CMD":
        raise site.error(f"unknown type {quoted(kind.upper())} in HEALTHCHECK", site.args_at,
                         hint="try CMD")
    if not test or not test.args:
        raise site.error("missing command after HEALTHCHECK CMD", site.args_at)
    durations = {}
    for name in ("interval", "timeout", "start-period", "start-interval"):
        text = str(flags.get(name, ""))
        try:
            value = parse_duration(text) if text else 0
        except ValueError as error:
            raise site.error(f"HEALTHCHECK --{name}: {error}", site.flag_at(name)) from None
        if value < 1_000_000 and value != 0:
            raise site.error(f"HEALTHCHECK --{name} cannot be less than 1ms ({text})",
                             site.flag_at(name))
        durations[name.replace("-", "_")] = value
    text = str(flags.get("retries", ""))
    if text and not (_GO_INT.fullmatch(text) and -2**31 <= int(text) < 2**31):
        raise site.error(f"HEALTHCHECK --retries: not a 32-bit integer: {quoted(text)}",
                         site.flag_at("retries"))
    retries = int(text) if text else 0
    if retries < 0:
        raise site.error(f"HEALTHCHECK --retries cannot be negative ({retries})",
                         site.flag_at("retries"))
    return ins.Healthcheck(site.span, site.original, test, retries=retries, **durations)


BUILDERS: dict[str, Callable[[Site, Flags, str], ins.Instruction]] = {
    "FROM": build_from, "RUN": build_run, "CMD": build_cmd, "ENTRYPOINT": build_entrypoint,
    "LABEL": build_label, "ENV": build_env, "MAINTAINER": build_maintainer,
    "EXPOSE": build_expose, "COPY": build_copy, "ADD": build_add, "VOLUME": build_volume,
    "USER": build_user, "WORKDIR": build_workdir, "ARG": build_arg,
    "STOPSIGNAL": build_stopsignal, "SHELL": build_shell, "HEALTHCHECK": build_healthcheck,
}
