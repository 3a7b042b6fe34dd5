"""RUN --mount from=: bind mounts of a stage, an image or a build context, caches seeded from
one; and --ssh ID=KEYFILE through an ssh-agent of the build's own. Real builds throughout."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from builder.sources.secrets import SshSource, parse_ssh
from tests import test_run_mounts
from tests.support import require
from tests.test_run_mounts import build, layer_names

store = test_run_mounts.store  # the fixture: a cache root holding busybox:test


def files_of(tarball: Path) -> dict[str, bytes]:
    """The regular files the layers above the base add, by name (a later layer wins)."""
    read = {}
    with tarfile.open(tarball) as archive:
        manifest = json.load(archive.extractfile("manifest.json"))
        for name in manifest[0]["Layers"][1:]:
            with tarfile.open(fileobj=archive.extractfile(name)) as layer:
                for member in layer.getmembers():
                    if member.isfile():
                        read[member.name] = layer.extractfile(member).read()
    return read


TOOLS = ("FROM busybox:test AS tools\n"
         "ARG V=one\n"
         "ARG E=elsewhere\n"
         "RUN mkdir -p /opt/seed && echo $V > /opt/seed/a && ln -s seed/a /opt/link && "
         "echo $E > /elsewhere\n")


def test_bind_from_a_stage_reads_it_read_only_and_keys_on_it(tmp_path, store):
    context = tmp_path / "ctx"
    context.mkdir()
    dockerfile = TOOLS + (
        "FROM busybox:test\n"
        "RUN --mount=type=bind,from=tools,source=/opt,target=/mnt cat /mnt/seed/a /mnt/link "
        "> /got && (touch /mnt/seed/x 2>/dev/null && echo writable || echo read-only) >> /got\n"
        "RUN --mount=from=0,source=opt/seed,target=/w,rw echo scribble > /w/a && cat /w/a > /rw "
        "&& (test -e /w/x && echo leaked || echo clean) >> /rw\n"
        "RUN --mount=from=tools,source=opt/seed,target=/again cat /again/a > /again-a\n")
    first, out = build(context, store, dockerfile)
    assert first.returncode == 0, first.stderr
    read = files_of(out)
    assert read["got"] == b"one\none\nread-only\n"
    assert read["rw"] == b"scribble\nclean\n"
    assert read["again-a"] == b"one\n"  # the rw mount's write is gone
    assert layer_names(out)[0] == ["got", "mnt"]  # nothing of the stage, only the target
    again, _ = build(context, store, dockerfile)
    assert again.returncode == 0 and "0 steps run, 4 cached" in again.stderr
    # BuildKit's key: what is bound, not the rest of the stage.
    elsewhere, _ = build(context, store, dockerfile, "--build-arg", "E=moved")
    assert elsewhere.returncode == 0 and "1 steps run, 3 cached" in elsewhere.stderr
    changed, out = build(context, store, dockerfile, "--build-arg", "V=two")
    assert changed.returncode == 0, changed.stderr
    assert "mount /mnt changed" in changed.stderr and "4 steps run, 0 cached" in changed.stderr
    assert files_of(out)["got"] == b"two\ntwo\nread-only\n"
    owner = dockerfile.replace("ln -s seed/a", "chown 7 /opt/seed/a && ln -s seed/a")
    chowned, _ = build(context, store, owner, "--build-arg", "V=two")
    assert chowned.returncode == 0 and "mount /mnt changed" in chowned.stderr


def test_a_read_only_bind_cannot_change_the_stage(tmp_path, store):
    """The bound files are the stage's own (hardlinked): root in the RUN can neither write nor
    chmod them, and the stage is intact for what comes after."""
    context = tmp_path / "ctx"
    context.mkdir()
    result, out = build(context, store, TOOLS + (
        "FROM busybox:test AS tamper\n"
        "RUN --mount=from=tools,source=/opt/seed,target=/m "
        "(echo tampered >> /m/a; chmod 777 /m/a; rm -f /m/a; touch /m/new) 2>/dev/null; "
        "echo tried > /tried\n"
        "FROM tools\n"
        "COPY --from=tamper /tried /tried\n"
        "RUN stat -c %a /opt/seed/a > /after && cat /opt/seed/a >> /after && ls /opt/seed >> "
        "/after\n"))
    assert result.returncode == 0, result.stderr
    assert files_of(out)["after"] == b"644\none\na\n"


def test_bind_from_an_image_and_a_build_context(tmp_path, store):
    context = tmp_path / "ctx"
    context.mkdir()
    other = tmp_path / "other"
    (other / "sub").mkdir(parents=True)
    (other / "sub" / "f.txt").write_text("from the context\n")
    dockerfile = ("FROM busybox:test\n"
                  "RUN --mount=from=busybox:test,source=/bin/busybox,target=/bb "
                  "cmp /bb /bin/busybox && echo same > /image\n"
                  "RUN --mount=from=extra,source=sub,target=/x cat /x/f.txt > /ctx\n")
    result, out = build(context, store, dockerfile, "--build-context", f"extra={other}")
    assert result.returncode == 0, result.stderr
    assert files_of(out)["image"] == b"same\n" and files_of(out)["ctx"] == b"from the context\n"
    hit, _ = build(context, store, dockerfile, "--build-context", f"extra={other}")
    assert "0 steps run, 2 cached" in hit.stderr
    (other / "sub" / "f.txt").write_text("changed\n")
    changed, out = build(context, store, dockerfile, "--build-context", f"extra={other}")
    assert "1 steps run, 1 cached" in changed.stderr  # only the RUN that binds it runs
    assert files_of(out)["ctx"] == b"changed\n"


def test_a_stage_used_only_by_a_mount_is_built_first(tmp_path, store):
    context = tmp_path / "ctx"
    context.mkdir()
    dockerfile = ("FROM busybox:test AS unused\nRUN echo never > /never\n"
                  "FROM busybox:test AS seed\nRUN mkdir /s && echo seeded > /s/f\n"
                  "FROM busybox:test AS app\n"
                  "RUN --mount=type=cache,id=seeded-cache,target=/c,from=seed,source=/s "
                  "cat /c/f > /first && echo added > /c/g\n"
                  "FROM busybox:test\nRUN echo last > /last\n")
    result, out = build(context, store, dockerfile, "--target", "app")
    assert result.returncode == 0, result.stderr
    assert "[seed 1/1] RUN" in result.stderr and "[unused" not in result.stderr
    assert files_of(out)["first"] == b"seeded\n"
    data = next(p for p in (store / "mounts").glob("*/id") if p.read_text() == "seeded-cache")
    assert sorted(os.listdir(data.parent / "data")) == ["f", "g"]
    # A cache that is not new is not seeded again: the RUN sees what the last one left.
    reseed = dockerfile.replace("echo seeded", "echo reseeded").replace("> /first", "> /second")
    second, out = build(context, store, reseed, "--target", "app")
    assert second.returncode == 0, second.stderr
    assert files_of(out)["second"] == b"seeded\n"


STAGE_ESCAPES = [
    ("source=../../..{marker}", "a path climbing out"),
    ("source=/opt/host", "an absolute symlink of the stage"),
    ("source=/opt/up/up/up{marker}", "a relative symlink climbing out"),
]


@pytest.mark.parametrize("source, attack", STAGE_ESCAPES)
def test_stage_sources_stay_inside_the_stage(tmp_path, store, source, attack):
    """`..` stops at the stage's root and its symlinks resolve inside it: a host file of the
    same path is never what is bound."""
    context = tmp_path / "ctx"
    context.mkdir()
    marker = tmp_path / "host-only"
    marker.write_text("host\n")
    result, _ = build(context, store, "FROM busybox:test AS tools\n"
                      f"RUN mkdir /opt && ln -s {marker} /opt/host && ln -s .. /opt/up\n"
                      "FROM busybox:test\n"
                      f"RUN --mount=from=tools,{source.format(marker=marker)},target=/m "
                      "cat /m\n")
    assert result.returncode == 1, attack
    assert "Dockerfile:4" in result.stderr and "not found in the stage" in result.stderr
    assert "host\n" not in result.stderr.split("ERROR", 1)[1]


def test_a_stage_source_inside_it_is_bound(tmp_path, store):
    context = tmp_path / "ctx"
    context.mkdir()
    result, out = build(context, store, TOOLS + "FROM busybox:test\n"
                        "RUN --mount=from=tools,source=../../../elsewhere,target=/up "
                        "cat /up > /up-copy\n"
                        "RUN --mount=from=tools,source=/opt/link,target=/l cat /l > /l-copy\n")
    assert result.returncode == 0, result.stderr
    assert files_of(out)["up-copy"] == b"elsewhere\n" and files_of(out)["l-copy"] == b"one\n"


REFUSED = [  # (the RUN, exit status, message); 127.0.0.1:1 refuses at once, no network
    ("RUN --mount=from=127.0.0.1:1/nosuch,target=/x true", 1,
     "cannot pull 127.0.0.1:1/nosuch:latest"),
    ("RUN --mount=from=9,target=/x true", 1, "RUN --mount from=9: invalid stage index"),
    ("RUN --mount=from=main,target=/x true", 1, "circular dependency detected on stage main"),
    ("RUN --mount=from=0,source=/missing,target=/x true", 1,
     "--mount source /missing: not found in the stage"),
    ("RUN --mount=type=cache,target=/c,from=0,source=/bin/busybox true", 1,
     "not a directory in the stage"),
    ("RUN --mount=from=ctx,source=escape/passwd,target=/x true", 1,
     "'escape/passwd': not found in the build context ctx"),
]


@pytest.mark.parametrize("line, status, message", REFUSED)
def test_bad_from_mounts_fail_naming_the_line(tmp_path, store, line, status, message):
    context = tmp_path / "ctx"
    context.mkdir()
    directory = tmp_path / "dir"
    directory.mkdir()
    os.symlink("/etc", directory / "escape")
    result, _ = build(context, store, f"FROM busybox:test\nFROM busybox:test AS main\n{line}\n"
                      "FROM busybox:test AS later\n", "--target", "main",
                      "--build-context", f"ctx={directory}")
    assert result.returncode == status
    assert "Dockerfile:3" in result.stderr and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


# -- --ssh ID=KEYFILE ---------------------------------------------------------------------------

def _ssh_add_tools(directory: Path) -> None:
    """ssh-add and the libraries it loads, to run in busybox:test through its own loader."""
    directory.mkdir()
    shutil.copy("/usr/bin/ssh-add", directory / "ssh-add")
    listed = subprocess.run(["ldd", "/usr/bin/ssh-add"], capture_output=True, text=True,
                            check=True).stdout
    for line in listed.splitlines():
        path = line.split("=>")[-1].split("(")[0].strip()
        if path.startswith("/"):
            shutil.copy(path, directory / os.path.basename(path))


def _agents_of(directory_prefix: str) -> list[str]:
    """The ssh-agent processes listening under /tmp/<prefix>* (the build's own agents)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0].endswith(b"ssh-agent") and any(a.decode(errors="replace").startswith(
                directory_prefix) for a in argv):
            found.append(pid)
    return found


def test_ssh_key_file_is_held_by_an_agent_of_the_builds_own(tmp_path, store):
    require(shutil.which("ssh-agent") is not None and shutil.which("ssh-keygen") is not None,
            "ssh-agent and ssh-keygen (openssh-client)")
    key = tmp_path / "id_test"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pybuild-test",
                    "-f", str(key)], check=True)
    fingerprint = subprocess.run(["ssh-keygen", "-lf", str(key)], capture_output=True,
                                 text=True, check=True).stdout.split()[1]
    context = tmp_path / "ctx"
    context.mkdir()
    _ssh_add_tools(context / "tools")
    run_ssh_add = ("--mount=source=tools,target=/tools /tools/ld-linux-x86-64.so.2 "
                   "--library-path /tools /tools/ssh-add -l")  # $SSH_AUTH_SOCK: the mount's
    before = set(Path("/tmp").glob("pybuild-ssh-*"))
    result, out = build(context, store, "FROM busybox:test\n"
                        f"RUN --mount=type=ssh {run_ssh_add} > /keys\n"
                        f"RUN --mount=type=ssh,id=deploy,target=/agent {run_ssh_add} "
                        "> /deploy-keys\n",
                        "--ssh", f"default={key}", "--ssh", f"deploy={key}")
    assert result.returncode == 0, result.stderr
    read = files_of(out)
    assert fingerprint.encode() in read["keys"] and b"pybuild-test" in read["keys"]
    assert fingerprint.encode() in read["deploy-keys"]
    assert set(Path("/tmp").glob("pybuild-ssh-*")) == before  # the agents' sockets are gone
    assert _agents_of("/tmp/pybuild-ssh-") == []
    failed, _ = build(context, store, "FROM busybox:test\n"
                      f"RUN --mount=type=ssh {run_ssh_add} && false\n", "--ssh", f"default={key}")
    assert failed.returncode == 1
    assert set(Path("/tmp").glob("pybuild-ssh-*")) == before and not _agents_of("/tmp/pybuild-ssh-")


def test_ssh_key_file_under_rootless(tmp_path):
    """Not root: the agent runs in the build's user namespace, and the RUN's root reaches it."""
    from tests.rootless_user import rootless_user
    from tests.support import busybox_base
    require(shutil.which("ssh-agent") is not None, "ssh-agent (openssh-client)")
    with rootless_user(busybox_base(tmp_path)) as user:
        user.grant(ranges=True)
        context = user.work / "ssh-context"
        context.mkdir()
        _ssh_add_tools(context / "tools")
        (context / "Dockerfile").write_text(
            "FROM busybox:test\nRUN --mount=type=ssh --mount=source=tools,target=/tools "
            "/tools/ld-linux-x86-64.so.2 --library-path /tools /tools/ssh-add -l > /keys\n")
        subprocess.run(["chmod", "-R", "a+rX", str(context)], check=True)
        key = user.home / "id_test"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "rootless-key",
                        "-f", str(key)], check=True)
        shutil.chown(key, user.name, user.name)
        cache = user.home / "cache"
        assert user.pybuild(cache, "load", "-i", str(user.work / "base.tar")).returncode == 0
        out = user.home / "out.tar"
        result = user.pybuild(cache, "--isolation", "rootless", "--ssh", f"default={key}",
                              "-o", str(out), str(context))
        assert result.returncode == 0, result.stderr
        assert b"rootless-key (ED25519)" in files_of(out)["keys"]
    assert not _agents_of("/tmp/pybuild-ssh-")


def test_ssh_keys_that_cannot_be_loaded_are_clear_errors(tmp_path, store):
    require(shutil.which("ssh-agent") is not None, "ssh-agent (openssh-client)")
    locked = tmp_path / "locked"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "secret-passphrase",
                    "-f", str(locked)], check=True)
    context = tmp_path / "ctx"
    context.mkdir()
    dockerfile = "FROM busybox:test\nRUN --mount=type=ssh true\n"
    for given, message in ((locked, "ssh-add could not load"),
                           (tmp_path / "absent", "neither a key file nor an agent socket")):
        result, _ = build(context, store, dockerfile, "--ssh", f"default={given}")
        assert result.returncode == 1
        assert "Dockerfile:2" in result.stderr and message in result.stderr, result.stderr
        assert "secret-passphrase" not in result.stderr
    assert not _agents_of("/tmp/pybuild-ssh-")


SSH_FORMS = [
    ("default", SshSource("default")),
    ("git=/run/agent.sock", SshSource("git", ("/run/agent.sock",))),
    ("default=/k/one,/k/two", SshSource("default", ("/k/one", "/k/two"))),
]


@pytest.mark.parametrize("text, source", SSH_FORMS)
def test_ssh_options_are_read_as_buildx_reads_them(text, source):
    assert parse_ssh(text) == source


@pytest.mark.parametrize("text", ["", "=x", "git=", "git=,"])
def test_malformed_ssh_options_are_refused(text):
    with pytest.raises(ValueError, match="expected ID"):
        parse_ssh(text)
