"""`--cache-to` / `--cache-from` values, as buildx spells them."""
from __future__ import annotations

import os

import pytest

from builder.cache.spec import parse_cache_spec
from builder.errors import UsageError
from layers.compression import Compression

VALID = [
    # (option, text, registry ref (full) or None, directory or None, tag, compression, ignore)
    ("--cache-to", "type=registry,ref=127.0.0.1:5000/cache:main",
     "127.0.0.1:5000/cache:main", None, "latest", Compression.GZIP, False),
    ("--cache-from", "type=registry,ref=ghcr.io/org/app:buildcache",
     "ghcr.io/org/app:buildcache", None, "latest", Compression.GZIP, False),
    ("--cache-from", "127.0.0.1:5000/cache", "127.0.0.1:5000/cache:latest", None, "latest",
     Compression.GZIP, False),
    ("--cache-to", "type=local,dest=/tmp/c", None, "/tmp/c", "latest", Compression.GZIP, False),
    ("--cache-from", "type=local,src=/tmp/c,tag=v2", None, "/tmp/c", "v2", Compression.GZIP,
     False),
    ("--cache-to", "type=local,dest=rel/dir,compression=zstd,ignore-error=true,mode=max", None,
     os.path.abspath("rel/dir"), "latest", Compression.ZSTD, True),
    ("--cache-to", "type=registry,ref=localhost:5000/c,compression=gzip,ignore-error=false",
     "localhost:5000/c:latest", None, "latest", Compression.GZIP, False),
]

INVALID = [
    ("--cache-to", "127.0.0.1:5000/cache", "expected type=registry"),
    ("--cache-to", "type=inline", "type=inline caches are not supported yet"),
    ("--cache-from", "type=gha", "type=gha caches are not supported yet"),
    ("--cache-to", "type=s3,bucket=b", "type=s3 caches are not supported yet"),
    ("--cache-to", "type=disk,dest=/x", "type must be registry or local"),
    ("--cache-to", "type=registry", "type=registry needs ref="),
    ("--cache-to", "type=local,src=/x", "type=local needs dest="),
    ("--cache-from", "type=local,dest=/x", "type=local needs src="),
    ("--cache-to", "type=local,dest=/x,mode=min", "only mode=max is supported"),
    ("--cache-from", "type=registry,ref=r,mode=max", "unknown attribute mode"),
    ("--cache-to", "type=registry,ref=r,tag=x", "unknown attribute tag"),
    ("--cache-to", "type=local,dest=/x,compression=bzip2", "compression must be gzip or zstd"),
    ("--cache-to", "type=local,dest=/x,ignore-error=yes", "ignore-error must be true or false"),
    ("--cache-to", "type=local,dest=/x,oops", "'oops' is not KEY=VALUE"),
    ("--cache-to", "type=registry,ref=UPPER/case", "invalid reference"),
    ("--cache-to", "type=local,dest=/x,mounts=yes", "mounts must be true or false"),
    ("--cache-to", "type=local,dest=/x,mount-max=lots", "mount-max: not a size: 'lots'"),
    ("--cache-from", "type=local,src=/x,mounts=true", "unknown attribute mounts"),
    ("--cache-from", "type=registry,ref=r,mount-max=1g", "unknown attribute mount-max"),
]

MOUNTS = [
    # (--cache-to text, mounts exported, the limit per mount in bytes)
    ("type=local,dest=/x", False, 1 << 30),
    ("type=local,dest=/x,mounts=true", True, 1 << 30),
    ("type=registry,ref=r,mounts=true,mount-max=2g", True, 2 << 30),
    ("type=registry,ref=r,mounts=false,mount-max=512m", False, 512 << 20),
    ("type=local,dest=/x,mounts=true,mount-max=1500", True, 1500),
]


@pytest.mark.parametrize("option, text, ref, directory, tag, compression, ignore", VALID)
def test_valid(option, text, ref, directory, tag, compression, ignore) -> None:
    spec = parse_cache_spec(text, option)
    assert (spec.ref.full() if spec.ref else None) == ref
    assert spec.directory == directory
    assert (spec.tag, spec.compression, spec.ignore_error) == (tag, compression, ignore)


@pytest.mark.parametrize("option, text, problem", INVALID)
def test_invalid(option, text, problem) -> None:
    with pytest.raises(UsageError) as caught:
        parse_cache_spec(text, option)
    assert str(caught.value).startswith(f"{option} ")
    assert problem in str(caught.value)


@pytest.mark.parametrize("text, mounts, limit", MOUNTS)
def test_mount_options(text, mounts, limit) -> None:
    spec = parse_cache_spec(text, "--cache-to")
    assert (spec.mounts, spec.mount_max) == (mounts, limit)
