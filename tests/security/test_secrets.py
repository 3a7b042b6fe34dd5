"""A build secret reaches its RUN and nothing else: not a layer, the config or history, any log
mode, --metadata-file, --trace, the cache root (index included), an exported cache (its cache
mounts too), an error message or `pybuild parse`. A changed value does not make a step run again; --no-cache does."""
from __future__ import annotations

import gzip
import secrets as random
from pathlib import Path

import pytest

from tests.support import busybox_base, pybuild

DOCKERFILE = """\
FROM busybox:test
RUN --mount=type=cache,id=near,target=/run/secrets --mount=type=secret,id=tok \
    test -s /run/secrets/tok && wc -c /run/secrets/tok > /len && echo kept > /run/secrets/other
RUN --mount=type=secret,id=tok,env=TOKEN,required test -n "$TOKEN" && echo seen > /env
RUN --mount=type=secret,id=tok sh -c 'exit 3'
"""


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return busybox_base(tmp_path_factory.mktemp("base"))


def everything_under(directory: Path) -> bytes:
    """The bytes of every file under `directory`, gzip blobs (an exported cache's) unpacked."""
    return b"".join(_unpacked(p.read_bytes()) for p in sorted(directory.rglob("*"))
                    if p.is_file() and not p.is_symlink())


def _unpacked(data: bytes) -> bytes:
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def test_a_secret_is_nowhere_but_in_its_run(tmp_path, base):
    value = random.token_hex(32)
    cache = tmp_path / "cache"
    env = {"PYBUILD_CACHE_DIR": str(cache), "TOKEN_VALUE": value}
    assert pybuild("load", "-i", str(base), env=env).returncode == 0
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(DOCKERFILE.rsplit("RUN", 1)[0])
    secret = tmp_path / "secret"
    secret.write_text(value)
    outputs = []
    for number, mode in enumerate(("plain", "json", "tty", "quiet")):
        out = tmp_path / f"{mode}.tar"
        result = pybuild("--progress", mode, "--no-cache", "-o", str(out),
                         "--secret", f"id=tok,src={secret}",
                         "--metadata-file", str(tmp_path / f"{mode}.json"),
                         "--trace", str(tmp_path / f"{mode}.trace"),
                         "--cache-to", f"type=local,dest={tmp_path / 'exported'},mounts=true",
                         str(context), env=env)
        assert result.returncode == 0, result.stderr
        outputs += [result.stderr.encode(), result.stdout, out.read_bytes()]
    with_env = pybuild("--progress", "plain", "-o", str(tmp_path / "env.tar"),
                       "--secret", "id=tok,env=TOKEN_VALUE", str(context), env=env)
    assert with_env.returncode == 0
    (context / "Dockerfile").write_text(DOCKERFILE)
    failed = pybuild("--progress", "plain", "-o", str(tmp_path / "failed.tar"),
                     "--secret", f"id=tok,src={secret}", str(context), env=env)
    assert failed.returncode == 1
    parsed = pybuild("parse", "-f", str(context / "Dockerfile"))
    outputs += [with_env.stderr.encode(), failed.stderr.encode(), parsed.stdout]
    found = [len(o) for o in outputs if value.encode() in o]
    assert not found
    for directory in (cache, tmp_path / "exported"):
        assert value.encode() not in everything_under(directory), directory
    # The cache mount the secret was mounted into was exported (with a stub where the secret was).
    assert b"kept\n" in everything_under(tmp_path / "exported")
    for path in tmp_path.glob("*.json"):
        assert value not in path.read_text()
    for path in tmp_path.glob("*.trace"):
        assert value not in path.read_text()


def test_a_changed_secret_value_does_not_rerun_a_step_but_no_cache_does(tmp_path, base):
    cache = tmp_path / "cache"
    env = {"PYBUILD_CACHE_DIR": str(cache)}
    assert pybuild("load", "-i", str(base), env=env).returncode == 0
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(DOCKERFILE.split("RUN")[0] + "RUN" +
                                        DOCKERFILE.split("RUN")[1])
    secret = tmp_path / "secret"

    def build(value: str, *args: str) -> str:
        secret.write_text(value)
        result = pybuild("--progress", "plain", "-o", str(tmp_path / "out.tar"), *args,
                         "--secret", f"id=tok,src={secret}", str(context), env=env)
        assert result.returncode == 0, result.stderr
        return result.stderr

    build("first")
    assert "CACHED" in build("second value")
    assert "CACHED" not in build("second value", "--no-cache")
