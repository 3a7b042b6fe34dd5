"""RUN --mount: the options as BuildKit reads them, and each mount type in real builds."""
from __future__ import annotations

import pytest

from grammar.mounts import (BindMount, CacheMount, MountError, SecretMount, SshMount, TmpfsMount,
                            parse_mount)

PARSED = [
    ("type=cache,target=/var/cache/apt,sharing=locked",
     CacheMount("/var/cache/apt", "/var/cache/apt", "locked")),
    ("type=cache,id=pip,dst=/root/.cache,mode=0700,uid=1000,gid=50,ro",
     CacheMount("/root/.cache", "pip", readonly=True, mode=0o700, uid=1000, gid=50)),
    ("type=cache,target=/c,from=tools,source=/seed", CacheMount("/c", "/c", from_="tools",
                                                                source="/seed")),
    ("target=/src", BindMount("/src")),
    ("type=bind,src=app,target=/app,from=build,rw", BindMount("/app", "app", "build", False)),
    ("type=bind,source=a,target=/a,readonly=false", BindMount("/a", "a", readonly=False)),
    ("type=tmpfs,target=/t,size=64m", TmpfsMount("/t", 64 << 20)),
    ("type=tmpfs,target=/t", TmpfsMount("/t")),
    ("type=secret,id=tok", SecretMount("tok", "/run/secrets/tok")),
    ("type=secret,target=/etc/npmrc", SecretMount("npmrc", "/etc/npmrc")),
    ("type=secret,id=tok,env=TOKEN", SecretMount("tok", None, env="TOKEN")),
    ("type=secret,id=tok,env=TOKEN,target=/t", SecretMount("tok", "/t", env="TOKEN")),
    ("type=secret,id=tok,required,mode=0440,uid=1,gid=2",
     SecretMount("tok", "/run/secrets/tok", True, 0o440, 1, 2)),
    ("type=ssh", SshMount()),
    ("type=ssh,id=git,target=/agent,required=true", SshMount("git", "/agent", True)),
    ('"type=bind","target=/x y"', BindMount("/x y")),
]


@pytest.mark.parametrize("text, mount", PARSED)
def test_mount_options_are_read_as_buildkit_reads_them(text, mount):
    assert parse_mount(text) == mount


REFUSED = [
    ("type=volume,target=/x", 'unsupported mount type "volume"'),
    ("type=bind", "needs a target"),
    ("type=cache,target=/x,sharing=sometimes", 'unsupported sharing value "sometimes"'),
    ("type=cache,target=/x,uid=root", "invalid value root for uid"),
    ("type=cache,target=/x,mode=999", "invalid value 999 for mode"),
    ("type=tmpfs,target=/x,mode=0700", "unexpected key 'mode' for mount type 'tmpfs'"),
    ("type=bind,target=/x,required", "unexpected key 'required' for mount type 'bind'"),
    ("type=bind,target=/x,colour=red", "unexpected key 'colour'"),
    ("type=bind,target=/x,ro=maybe", "invalid value for readonly: maybe"),
    ("type=tmpfs,target=/x,size=lots", "invalid value lots for size"),
    ("type=secret", "requires an id or a target"),
    ("type=cache,target", "must be a key=value pair"),
]


@pytest.mark.parametrize("text, message", REFUSED)
def test_malformed_mounts_are_refused(text, message):
    with pytest.raises(MountError, match=message.replace("(", r"\(")):
        parse_mount(text)


def test_values_are_expanded_at_build_time_and_checked_then():
    assert parse_mount("type=cache,target=$DIR,uid=$UID") == CacheMount("$DIR", "$DIR")
    expanded = parse_mount("type=cache,target=$DIR,uid=$UID",
                           lambda text: {"$DIR": "/c", "$UID": "7"}.get(text, text))
    assert expanded == CacheMount("/c", "/c", uid=7)
    with pytest.raises(MountError):
        parse_mount("type=cache,target=/c,uid=$UID", lambda text: "x")


def test_a_bad_mount_names_its_line(tmp_path):
    from tests.support import pybuild
    (tmp_path / "Dockerfile").write_text(
        "FROM busybox:test\nRUN true\nRUN --mount=type=cache,target=/x,sharing=no true\n")
    result = pybuild("parse", "-f", str(tmp_path / "Dockerfile"))
    assert result.returncode == 1
    assert "Dockerfile:3:5: --mount=type=cache,target=/x,sharing=no: unsupported sharing " \
           'value "no"' in result.stderr
    assert "Traceback" not in result.stderr
