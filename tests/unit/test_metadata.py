"""builder/metadata.py: each config-only instruction as a function of (state, instruction), as
Docker applies it: what is expanded, what is stored as written, and what is refused."""
from __future__ import annotations

import pytest

from builder.steps.config import METADATA
from builder.plan.state import BuildArgs, StageState
from grammar.errors import DockerfileError
from grammar.parser import parse
from layers.image import ContainerConfig, Healthcheck, ImageConfig

BASE = StageState(ImageConfig(config=ContainerConfig(env=("PATH=/bin",), cmd=("base-cmd",))),
                  scope={"PATH": "/bin", "P": "8080"})


def apply(*lines: str, state: StageState = BASE, args: BuildArgs = BuildArgs()) -> StageState:
    for instruction in parse("FROM scratch\n" + "\n".join(lines) + "\n").instructions[1:]:
        state = METADATA[type(instruction)](state, instruction, args)
    return state


def config(*lines: str, **kwargs) -> dict:
    return apply(*lines, **kwargs).image.config.to_json()


@pytest.mark.parametrize("lines, expected", [
    (["ENV A=1 B=$A"], {"Env": ["PATH=/bin", "A=1", "B="]}),
    (["ENV A=1", "ENV B=$A"], {"Env": ["PATH=/bin", "A=1", "B=1"]}),
    (["ENV PATH=/usr/bin:$PATH"], {"Env": ["PATH=/usr/bin:/bin"]}),
    (["ENV A 1 2"], {"Env": ["PATH=/bin", "A=1 2"]}),
    (["LABEL a=$P b=\"x y\"", "LABEL a=2"], {"Labels": {"a": "2", "b": "x y"}}),
    (["EXPOSE 80 $P/udp 7000-7001/tcp 80/tcp"],
     {"ExposedPorts": {"80/tcp": {}, "8080/udp": {}, "7000/tcp": {}, "7001/tcp": {}}}),
    (["VOLUME /data $P", "VOLUME [\"/data\", \"/logs\"]"],
     {"Volumes": {"/data": {}, "8080": {}, "/logs": {}}}),
    (["USER app:$P"], {"User": "app:8080"}),
    (["STOPSIGNAL SIGTERM"], {"StopSignal": "SIGTERM"}),
    (["STOPSIGNAL 9"], {"StopSignal": "9"}),
    (["ONBUILD RUN echo $P"], {"OnBuild": ["RUN echo $P"]}),
    (["SHELL [\"/bin/bash\", \"-c\"]"], {"Shell": ["/bin/bash", "-c"]}),
])
def test_config_fields(lines: list[str], expected: dict) -> None:
    got = config(*lines)
    assert {key: got[key] for key in expected} == expected


@pytest.mark.parametrize("lines, cmd, entrypoint", [
    (["CMD echo $P"], ["/bin/sh", "-c", "echo $P"], None),
    (["CMD [\"a\", \"$P\"]"], ["a", "$P"], None),
    (["SHELL [\"/bin/bash\", \"-c\"]", "CMD run"], ["/bin/bash", "-c", "run"], None),
    (["ENTRYPOINT [\"e\"]"], None, ["e"]),
    (["CMD [\"c\"]", "ENTRYPOINT [\"e\"]"], ["c"], ["e"]),
    (["ENTRYPOINT [\"e\"]", "CMD [\"c\"]"], ["c"], ["e"]),
    (["ENTRYPOINT e"], None, ["/bin/sh", "-c", "e"]),
])
def test_cmd_and_entrypoint(lines: list[str], cmd: list | None, entrypoint: list | None) -> None:
    """An ENTRYPOINT drops the CMD the base image had, not one this stage set."""
    got = config(*lines)
    assert (got.get("Cmd"), got.get("Entrypoint")) == (cmd, entrypoint)


def test_an_inherited_cmd_stays_without_an_entrypoint() -> None:
    assert config("ENV A=1")["Cmd"] == ["base-cmd"]


@pytest.mark.parametrize("line, test", [
    ("HEALTHCHECK NONE", ("NONE",)),
    ("HEALTHCHECK --interval=5s --retries=3 CMD curl $P", ("CMD-SHELL", "curl $P")),
    ("HEALTHCHECK CMD [\"curl\", \"x\"]", ("CMD", "curl", "x")),
])
def test_healthcheck(line: str, test: tuple) -> None:
    health = apply(line).image.config.healthcheck
    assert isinstance(health, Healthcheck) and health.test == test
    if "--interval" in line:
        assert (health.interval, health.retries) == (5_000_000_000, 3)


def test_maintainer_sets_the_author() -> None:
    assert apply("MAINTAINER Jo <jo@example.com>").image.author == "Jo <jo@example.com>"


@pytest.mark.parametrize("lines, args, scope", [
    (["ARG V=1"], BuildArgs(), {"V": "1"}),
    (["ARG V=1"], BuildArgs({"V": "cli"}), {"V": "cli"}),
    (["ARG V"], BuildArgs(), {}),
    (["ARG V"], BuildArgs(globals={"V": "g"}), {"V": "g"}),
    (["ARG V=$P"], BuildArgs(), {"V": "8080"}),
    (["ARG A=1 B=$A"], BuildArgs(), {"A": "1", "B": "1"}),
    (["ENV V=env", "ARG V"], BuildArgs(), {"V": "env"}),
    (["ARG V=1", "ENV V=env"], BuildArgs(), {"V": "env"}),
])
def test_arg_enters_the_scope_only_with_a_value(lines: list[str], args: BuildArgs,
                                                scope: dict) -> None:
    state = apply(*lines, args=args)
    variables = state.variables()
    assert {k: v for k, v in variables.items() if k not in ("PATH", "P")} == scope
    if not any(line.startswith("ENV") for line in lines):
        assert state.image.config.env == BASE.image.config.env, "an ARG never reaches the image"


@pytest.mark.parametrize("line, message", [
    ("EXPOSE 80/xyz", "invalid protocol"),
    ("EXPOSE http", "invalid port"),
    ("EXPOSE 0", "invalid port range"),
    ("EXPOSE 90-80", "invalid port range"),
    ("EXPOSE 65536", "invalid port range"),
    ("STOPSIGNAL -9", "invalid signal"), ("STOPSIGNAL 9x", "invalid signal"),
    ("VOLUME $EMPTY", "can not be an empty string"),
])
def test_bad_values_are_dockerfile_errors(line: str, message: str) -> None:
    with pytest.raises(DockerfileError, match=message):
        apply(line)


def test_every_config_only_instruction_has_a_function() -> None:
    names = {cls.__name__ for cls in METADATA}
    assert names == {"Env", "Label", "Expose", "Volume", "User", "Cmd", "Entrypoint", "Shell",
                     "Stopsignal", "Healthcheck", "Onbuild", "Maintainer", "Arg"}
