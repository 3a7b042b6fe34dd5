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


# -- real builds ------------------------------------------------------------------------------

import os  # noqa: E402
import tarfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from tests.support import busybox_base, pybuild  # noqa: E402


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A cache root holding busybox:test, shared by the builds of this module."""
    base = tmp_path_factory.mktemp("store")
    archive = busybox_base(base)
    cache = base / "cache"
    assert pybuild("load", "-i", str(archive), env={"PYBUILD_CACHE_DIR": str(cache)}).returncode == 0
    return cache


def build(context: Path, cache: Path, dockerfile: str, *args: str, isolation: str = "auto"):
    (context / "Dockerfile").write_text(dockerfile)
    out = context.parent / f"{context.name}.tar"
    result = pybuild("--progress", "plain", "--isolation", isolation, "-o", str(out), *args,
                     str(context), env={"PYBUILD_CACHE_DIR": str(cache)})
    return result, out


def layer_names(tarball: Path) -> list[list[str]]:
    """The entry names of each layer above the base, in order."""
    with tarfile.open(tarball) as archive:
        manifest = __import__("json").load(archive.extractfile("manifest.json"))
        layers = []
        for name in manifest[0]["Layers"][1:]:
            with tarfile.open(fileobj=archive.extractfile(name)) as layer:
                layers.append(sorted(m.name.rstrip("/") for m in layer.getmembers()))
    return layers


def test_cache_mount_persists_across_builds_and_never_enters_a_layer(tmp_path, store):
    context = tmp_path / "ctx"
    context.mkdir()
    dockerfile = ("FROM busybox:test\nARG N=1\n"
                  "RUN --mount=type=cache,target=/var/cache/app,sharing=locked "
                  "echo $N >> /var/cache/app/runs && cat /var/cache/app/runs > /seen\n")
    first, out = build(context, store, dockerfile)
    assert first.returncode == 0, first.stderr
    assert layer_names(out) == [["seen", "var", "var/cache", "var/cache/app"]]  # the empty target stays
    second, out = build(context, store, dockerfile, "--build-arg", "N=2")
    assert second.returncode == 0, second.stderr
    with tarfile.open(out) as archive:
        names = archive.getnames()
    assert "CACHED" not in second.stderr.split("RUN --mount")[1].split("\n#")[1]
    du = pybuild("du", env={"PYBUILD_CACHE_DIR": str(store)})
    assert "/var/cache/app" in du.stdout.decode()
    data = [p for p in (store / "mounts").glob("*/data/runs")]
    assert [p.read_text() for p in data] == ["1\n2\n"]
    pruned = pybuild("prune", "--filter", "type=exec.cachemount",
                     env={"PYBUILD_CACHE_DIR": str(store)})
    assert pruned.returncode == 0 and "removed 1 cache mounts" in pruned.stdout.decode()
    assert not list((store / "mounts").glob("*/data"))
    assert names


def test_locked_cache_mount_serialises_concurrent_builds(tmp_path, store):
    """Two builds whose RUNs hold the same `locked` cache: the second waits for the first."""
    stamps = tmp_path / "stamps"
    results = []

    def one(name: str) -> None:
        context = tmp_path / name
        context.mkdir()
        dockerfile = (f"FROM busybox:test\nRUN --mount=type=cache,id=serial,target=/c,"
                      f"sharing=locked echo {name} start >> /c/log && sleep 2 && "
                      f"echo {name} end >> /c/log\n")
        results.append(build(context, store, dockerfile)[0])

    threads = [threading.Thread(target=one, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
        time.sleep(0.3)
    for thread in threads:
        thread.join()
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    log = next((store / "mounts").glob("*/data/log")).read_text().split("\n")
    assert log[:4] in (["a start", "a end", "b start", "b end"],
                       ["b start", "b end", "a start", "a end"]), log
    del stamps


def test_bind_mount_reads_the_context_and_its_content_is_in_the_key(tmp_path, store):
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "src").mkdir()
    (context / "src" / "app.txt").write_text("one\n")
    (context / "other.txt").write_text("unrelated\n")
    dockerfile = ("FROM busybox:test\n"
                  "RUN --mount=source=src,target=/mnt/src cat /mnt/src/app.txt > /copy && "
                  "(touch /mnt/src/x 2>/dev/null && echo writable || echo read-only) >> /copy\n"
                  "RUN --mount=target=/w,rw echo scribble > /w/other.txt && cat /w/other.txt\n")
    first, out = build(context, store, dockerfile)
    assert first.returncode == 0, first.stderr
    assert layer_names(out) == [["copy", "mnt", "mnt/src"], ["w"]]
    assert (context / "other.txt").read_text() == "unrelated\n"  # rw writes are thrown away
    again, _ = build(context, store, dockerfile)
    assert again.stderr.count("CACHED") == 2
    (context / "src" / "app.txt").write_text("two\n")
    changed, out = build(context, store, dockerfile)
    assert changed.returncode == 0
    assert changed.stderr.count("CACHED") == 0
    (context / "other.txt").write_text("changed\n")
    outside, _ = build(context, store, dockerfile)
    assert outside.stderr.count("CACHED") == 1  # only the RUN that binds the whole context runs
    with tarfile.open(out) as archive:
        manifest = __import__("json").load(archive.extractfile("manifest.json"))
        with tarfile.open(fileobj=archive.extractfile(manifest[0]["Layers"][1])) as layer:
            assert layer.extractfile("copy").read() == b"two\nread-only\n"


def test_bind_source_may_not_leave_the_context(tmp_path, store):
    context = tmp_path / "ctx"
    context.mkdir()
    os.symlink("/etc", context / "escape")
    result, _ = build(context, store, "FROM busybox:test\n"
                      "RUN --mount=source=escape/passwd,target=/p cat /p\n")
    assert result.returncode == 1
    assert "Dockerfile:2" in result.stderr and "Traceback" not in result.stderr


def test_tmpfs_and_secret_mounts(tmp_path, store):
    context = tmp_path / "ctx"
    context.mkdir()
    secret = tmp_path / "token"
    secret.write_text("hunter2")
    dockerfile = ("FROM busybox:test\n"
                  "RUN --mount=type=tmpfs,target=/scratch,size=1m echo x > /scratch/f && "
                  "df -k /scratch | tail -1 | awk '{print $2}' > /tmpfs-size\n"
                  "RUN --mount=type=secret,id=tok,mode=0440,uid=1000 stat -c '%a %u' "
                  "/run/secrets/tok > /secret-stat && "
                  "test \"$(cat /run/secrets/tok)\" = hunter2 && echo ok >> /secret-stat\n"
                  "RUN --mount=type=secret,id=tok,env=TOKEN test \"$TOKEN\" = hunter2 && "
                  "test ! -e /run/secrets/tok\n"
                  "RUN --mount=type=secret,id=absent cat /run/secrets/absent 2>&1 | "
                  "grep -q 'No such' && echo > /absent-ok\n")
    result, out = build(context, store, dockerfile, "--secret", f"id=tok,src={secret}")
    assert result.returncode == 0, result.stderr
    layers = layer_names(out)
    assert layers[0] == ["scratch", "tmpfs-size"]
    assert layers[1] == ["run", "run/secrets", "secret-stat"]  # the file stub is gone
    with tarfile.open(out) as archive:
        manifest = __import__("json").load(archive.extractfile("manifest.json"))
        read = {}
        for name in manifest[0]["Layers"][1:]:
            with tarfile.open(fileobj=archive.extractfile(name)) as layer:
                for member in layer.getmembers():
                    if member.isfile():
                        read[member.name] = layer.extractfile(member).read()
    assert read["tmpfs-size"] == b"1024\n"
    assert read["secret-stat"] == b"440 1000\nok\n"
    required, _ = build(context, store, "FROM busybox:test\n"
                        "RUN --mount=type=secret,id=nope,required true\n")
    assert required.returncode == 1
    assert "Dockerfile:2" in required.stderr and "secret nope is required" in required.stderr


def test_mounts_under_chroot_fail_naming_the_strategy(tmp_path, store):
    context = tmp_path / "ctx"
    context.mkdir()
    result, _ = build(context, store, "FROM busybox:test\n"
                      "RUN --mount=type=tmpfs,target=/t true\n", isolation="chroot")
    assert result.returncode == 1
    assert "chroot sandbox" in result.stderr and "Dockerfile:2" in result.stderr


def test_ssh_mount_forwards_a_real_agent_socket(tmp_path, store):
    """The agent's socket is there, as a socket, where SSH_AUTH_SOCK says (busybox:test has no
    ssh-add to list keys through it; the socket's presence and type are what is checked)."""
    import shutil
    import subprocess
    from tests.support import require
    require(shutil.which("ssh-agent") is not None, "ssh-agent (openssh-client)")
    socket_path = tmp_path / "agent.sock"
    agent = subprocess.run(["ssh-agent", "-a", str(socket_path)], capture_output=True, text=True)
    pid = int(agent.stdout.split("SSH_AGENT_PID=")[1].split(";")[0])
    try:
        context = tmp_path / "ctx"
        context.mkdir()
        (context / "Dockerfile").write_text(
            "FROM busybox:test\nRUN --mount=type=ssh test -S \"$SSH_AUTH_SOCK\" && "
            "echo \"$SSH_AUTH_SOCK\" > /sock\n")
        out = tmp_path / "out.tar"
        result = pybuild("--progress", "plain", "--ssh", f"default={socket_path}", "-o", str(out),
                         str(context), env={"PYBUILD_CACHE_DIR": str(store)})
        assert result.returncode == 0, result.stderr
        assert layer_names(out) == [["run", "run/buildkit", "sock"]]
    finally:
        os.kill(pid, 15)
