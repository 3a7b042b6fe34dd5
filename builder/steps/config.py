"""Instructions that only edit the image config: each a plain function of (state, instruction).

They never make a layer or a process. Which of their words are expanded, and with which
variables, follows Docker: ENV, LABEL, EXPOSE, VOLUME, USER, STOPSIGNAL are expanded; CMD,
ENTRYPOINT, SHELL, HEALTHCHECK, ONBUILD and MAINTAINER are stored as written.
"""
from __future__ import annotations

import re
from dataclasses import replace

from builder.plan.state import BuildArgs, StageState
from grammar import instructions as ins
from grammar.errors import DockerfileError
from layers.image import Healthcheck

DEFAULT_SHELL = ("/bin/sh", "-c")
_PORT = re.compile(r"(\d+)(?:-(\d+))?(?:/([A-Za-z]+))?")
_SIGNAL = re.compile(r"(SIG)?[A-Z][A-Z0-9+-]*|\d+", re.IGNORECASE)


def env(state: StageState, instruction: ins.Env, args: BuildArgs) -> StageState:
    """All pairs are expanded with the variables in force before the instruction
    (`ENV X=new Y=$X` gives Y the old X)."""
    pairs = [(state.expand(p.key), state.expand(p.value)) for p in instruction.pairs]
    config = state.image.config
    for key, value in pairs:
        config = config.with_env(key, value)
        state = state.with_variable(key, value)
    return state.with_config(env=config.env)


def label(state: StageState, instruction: ins.Label, args: BuildArgs) -> StageState:
    labels = dict(state.image.config.labels)
    for pair in instruction.pairs:
        labels[state.expand(pair.key)] = state.expand(pair.value)
    return state.with_config(labels=tuple(labels.items()))


def expose(state: StageState, instruction: ins.Expose, args: BuildArgs) -> StageState:
    ports = list(state.image.config.exposed_ports)
    for word in instruction.ports:
        for spec in state.expand_split(word):
            for port in _ports(spec):
                if port not in ports:
                    ports.append(port)
    return state.with_config(exposed_ports=tuple(ports))


def _ports(spec: str) -> list[str]:
    """`80` -> 80/tcp; `7000-7002/udp` -> one key per port."""
    match = _PORT.fullmatch(spec)
    if not match:
        raise DockerfileError(f"invalid port {spec!r}", hint="write PORT, PORT/PROTO or FIRST-LAST/PROTO")
    first, last, proto = int(match[1]), int(match[2] or match[1]), (match[3] or "tcp").lower()
    if proto not in ("tcp", "udp", "sctp"):
        raise DockerfileError(f"invalid protocol {proto!r} in port {spec!r}")
    if not 0 < first <= last <= 65535:
        raise DockerfileError(f"invalid port range {spec!r}")
    return [f"{port}/{proto}" for port in range(first, last + 1)]


def volume(state: StageState, instruction: ins.Volume, args: BuildArgs) -> StageState:
    volumes = list(state.image.config.volumes)
    for path in instruction.paths:
        value = state.expand(path)
        if not value.strip():
            raise DockerfileError("VOLUME specified can not be an empty string")
        if value not in volumes:
            volumes.append(value)
    return state.with_config(volumes=tuple(volumes))


def user(state: StageState, instruction: ins.User, args: BuildArgs) -> StageState:
    return state.with_config(user=state.expand(instruction.user))


def _command(state: StageState, command: ins.Command) -> tuple[str, ...]:
    if command.shell:
        return (state.image.config.shell or DEFAULT_SHELL) + command.args
    return command.args


def cmd(state: StageState, instruction: ins.Cmd, args: BuildArgs) -> StageState:
    return replace(state.with_config(cmd=_command(state, instruction.command)), cmd_set=True)


def entrypoint(state: StageState, instruction: ins.Entrypoint, args: BuildArgs) -> StageState:
    """ENTRYPOINT drops a CMD inherited from the base image, not one set in this stage."""
    changes = {"entrypoint": _command(state, instruction.command)}
    if not state.cmd_set:
        changes["cmd"] = None
    return state.with_config(**changes)


def shell(state: StageState, instruction: ins.Shell, args: BuildArgs) -> StageState:
    return state.with_config(shell=instruction.args)


def stopsignal(state: StageState, instruction: ins.Stopsignal, args: BuildArgs) -> StageState:
    signal = state.expand(instruction.signal)
    if not _SIGNAL.fullmatch(signal):
        raise DockerfileError(f"invalid signal {signal!r}")
    return state.with_config(stop_signal=signal)


def healthcheck(state: StageState, instruction: ins.Healthcheck, args: BuildArgs) -> StageState:
    command = instruction.command
    if command is None:
        test: tuple[str, ...] = ("NONE",)
    elif command.shell:
        test = ("CMD-SHELL",) + command.args
    else:
        test = ("CMD",) + command.args
    return state.with_config(healthcheck=Healthcheck(
        test, instruction.interval, instruction.timeout, instruction.start_period,
        instruction.start_interval, instruction.retries))


def onbuild(state: StageState, instruction: ins.Onbuild, args: BuildArgs) -> StageState:
    return state.with_config(on_build=state.image.config.on_build + (instruction.expression,))


def maintainer(state: StageState, instruction: ins.Maintainer, args: BuildArgs) -> StageState:
    return replace(state, image=replace(state.image, author=instruction.name))


def arg(state: StageState, instruction: ins.Arg, args: BuildArgs) -> StageState:
    """A declared ARG with a value (build-arg, default or global) enters the scope; one with
    none leaves the scope as it is."""
    for decl in instruction.args:
        name = state.expand(decl.name)
        value = args.value(name, decl.default, state)
        if value is not None:
            state = state.with_variable(name, value)
    return state


METADATA = {
    ins.Env: env, ins.Label: label, ins.Expose: expose, ins.Volume: volume, ins.User: user,
    ins.Cmd: cmd, ins.Entrypoint: entrypoint, ins.Shell: shell, ins.Stopsignal: stopsignal,
    ins.Healthcheck: healthcheck, ins.Onbuild: onbuild, ins.Maintainer: maintainer, ins.Arg: arg,
}
