"""Registry transfers (issue 5): pybuild's push and pull against skopeo and Docker, on one image
and one local registry (Debian's docker-registry on 127.0.0.1), in one run:

    python3 -m pytest -q tests/benchmarks/test_registry_transfer.py -m benchmark -s -p no:cacheprovider

The image is the busybox base plus a COPY of a generated context (20,000 files, 150 MB, half
text and half random data). Every tool pushes it to a repository of its own and pulls it back
into an empty store:

  push (cold): `pybuild push` of the image in the local store (its layers compressed with gzip
               on every core and streamed to the registry as they come) vs `skopeo copy
               --dest-compress docker-archive:... docker://` (gzip), each into a registry of
               its own that has none of it, best of 3, taking turns; the blobs' sizes shown
  push (build): pybuild --push of an image built before (the build's cache check, then the
               push) vs skopeo vs `docker push` of the loaded image (gzip)
  push again:  nothing changed: pybuild's HEAD checks vs the same for skopeo and Docker
  pull:        pybuild FROM the pushed image into an empty cache (download, verify, decompress
               into the blob store) vs `skopeo copy docker://... oci:DIR` (download, verify)
               vs `docker pull` (download, verify, decompress, extract into overlay2)
  cache:       a runner with an empty cache importing --cache-from the registry: every step
               reused, only the final image's layers fetched

Figures are printed; what is asserted is that each transfer made what it should, and the goals,
ratios measured in the same run: pybuild's push no slower than skopeo's and faster than Docker's,
its pull faster than `docker pull`.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.benchmarks.workload import Command, Table, Timing, make_context
from tests.registry_support import Registry
from tests.support import DOCKER, ROOT, docker_available

pytestmark = pytest.mark.benchmark
BUSYBOX_RECIPE = ROOT / "testdata" / "images" / "busybox" / "make.py"


@dataclass
class Bench:
    work: str
    registry: Registry
    env: dict[str, str]
    context: str
    archive: str  # the image as a docker-save tarball (for skopeo and docker load)
    table: Table
    docker_images: list[str]
    pushed: str = ""  # the reference pybuild pushed, which the pulls read

    def ref(self, tool: str) -> str:
        return f"{self.registry.address}/{tool}-{uuid.uuid4().hex[:6]}:1"

    def pybuild(self, cache: str, *args: str, before=lambda: None) -> Command:
        return Command([sys.executable, "-m", "builder.cli", "-q", "--network", "none", *args,
                        self.context], before=before, cwd=str(ROOT),
                       env=dict(self.env, PYBUILD_CACHE_DIR=os.path.join(self.work, cache)))


@pytest.fixture(scope="module")
def bench() -> Iterator[Bench]:
    if not docker_available():
        pytest.skip("no Docker engine")
    if shutil.which("skopeo") is None:
        pytest.skip("no skopeo")
    work = tempfile.mkdtemp(prefix="pybuild-bench-registry-")
    registry = Registry()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = os.path.join(work, "pycache")
    state = None
    try:
        base = os.path.join(work, "busybox.tar")
        subprocess.run([sys.executable, str(BUSYBOX_RECIPE), base, "--tag", "busybox:test"],
                       check=True)
        context = make_context(os.path.join(work, "context"), files=20_000,
                               total_bytes=150 << 20)
        with open(os.path.join(context.root, "Dockerfile"), "w") as handle:
            handle.write("FROM busybox:test\nCOPY . /data\nRUN echo done > /done\n")
        table = Table(f"Registry transfers ({os.cpu_count()} CPUs, load average "
                      f"{os.getloadavg()[0]:.2f}): busybox + {context.files:,} files, "
                      f"{context.total_bytes / 1e6:.0f} MB, to and from a local docker-registry")
        state = Bench(work, registry, env, context.root, os.path.join(work, "image.tar"), table,
                      [])
        for cache in ("seed", "push", "pull", "import"):
            subprocess.run([sys.executable, "-m", "builder.cli", "load", "-q", "-i", base],
                           cwd=str(ROOT), check=True,
                           env=dict(env, PYBUILD_CACHE_DIR=os.path.join(work, cache)))
        state.pybuild("seed", "-t", "bench/app:1", "-o", state.archive).run()
        yield state
    finally:
        if state is not None:
            if state.docker_images:
                subprocess.run([DOCKER, "rmi", "-f", *state.docker_images], capture_output=True)
            print(state.table.render())
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)


def _wall(timing: Timing) -> Timing:
    return Timing(timing.wall, None)


def test_push_of_a_stored_image(bench: Bench) -> None:
    store = os.path.join(bench.work, "push")
    pybuild, skopeo = Timing(float("inf"), float("inf")), Timing(float("inf"), float("inf"))
    sizes: dict[str, int] = {}
    for _ in range(3):
        registry = Registry()
        try:
            target = f"{registry.address}/pybuild:1"
            bench.pybuild("push", "-t", target, "-o", os.devnull).run()  # into the store
            push = Command([sys.executable, "-m", "builder.cli", "push", target],
                           before=lambda: _forget_compressed(store), cwd=str(ROOT),
                           env=dict(bench.env, PYBUILD_CACHE_DIR=store)).run()
            copy = Command(["skopeo", "copy", "-q", "--dest-tls-verify=false", "--dest-compress",
                            f"docker-archive:{bench.archive}",
                            f"docker://{registry.address}/skopeo:1"]).run()
            sizes = {tool: _layers_size(f"{registry.address}/{tool}:1")
                     for tool in ("pybuild", "skopeo")}
        finally:
            registry.stop()
        pybuild = Timing(min(pybuild.wall, push.wall), min(pybuild.cpu, push.cpu))
        skopeo = Timing(min(skopeo.wall, copy.wall), min(skopeo.cpu, copy.cpu))
    bench.table.add(f"push: skopeo copy --dest-compress docker-archive: "
                    f"(gzip, {sizes['skopeo'] / 1e6:.1f} MB)", skopeo)
    bench.table.add(f"push: pybuild push of the stored image (gzip -1, "
                    f"{sizes['pybuild'] / 1e6:.1f} MB)", pybuild, versus=("skopeo", skopeo),
                    at_most=1)
    bench.table.check()


def _forget_compressed(store: str) -> None:
    """Remove the compressed blobs a push left in `store`, so the next compresses again."""
    variants = os.path.join(store, "compressed", "sha256")
    for layer in os.listdir(variants) if os.path.isdir(variants) else ():
        for record in os.listdir(os.path.join(variants, layer)):
            blob = os.path.join(store, "blobs", "sha256", record.removesuffix(".json"))
            if os.path.exists(blob):
                os.unlink(blob)
        shutil.rmtree(os.path.join(variants, layer))


def _layers_size(ref: str) -> int:
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
                         capture_output=True, check=True).stdout
    return sum(layer["size"] for layer in json.loads(raw)["layers"])


def test_push(bench: Bench) -> None:
    target = bench.ref("pybuild")
    bench.pybuild("push", "-t", target, "-o", os.devnull).run()  # built, not yet compressed
    pybuild = bench.pybuild("push", "-t", target, "--push", before=lambda: _forget_compressed(
        os.path.join(bench.work, "push"))).run()
    again = bench.pybuild("push", "-t", target, "--push").run()
    skopeo_ref = bench.ref("skopeo")
    skopeo_copy = ["skopeo", "copy", "-q", "--dest-tls-verify=false", "--dest-compress",
                   f"docker-archive:{bench.archive}", f"docker://{skopeo_ref}"]
    skopeo = Command(skopeo_copy).run()
    skopeo_again = Command(skopeo_copy).run()
    docker_ref = bench.ref("docker")
    subprocess.run([DOCKER, "load", "-q", "-i", bench.archive], check=True, capture_output=True)
    subprocess.run([DOCKER, "tag", "bench/app:1", docker_ref], check=True)
    bench.docker_images += ["bench/app:1", docker_ref]
    docker = _wall(Command([DOCKER, "push", docker_ref]).run())
    docker_again = _wall(Command([DOCKER, "push", docker_ref]).run())
    bench.table.add("push (build): skopeo copy (gzip), once", skopeo)
    bench.table.add("push (build): docker push", docker)
    bench.table.add("push (build): pybuild --push (build cached; gzip), once", pybuild,
                    versus=("skopeo", skopeo))
    bench.table.add("    the same against docker push", pybuild, versus=("docker", docker),
                    at_most=1)
    bench.table.add("push again: skopeo", skopeo_again)
    bench.table.add("push again: docker push", docker_again)
    bench.table.add("push again: pybuild --push", again, versus=("skopeo", skopeo_again))
    bench.pushed = target
    bench.table.check()


def test_pull(bench: Bench) -> None:
    source = bench.pushed or pytest.skip("the push benchmark did not run")
    pull_cache = os.path.join(bench.work, "pull")
    from_context = os.path.join(bench.work, "from")
    os.makedirs(from_context, exist_ok=True)
    with open(os.path.join(from_context, "Dockerfile"), "w") as handle:
        handle.write(f"FROM {source}\n")
    pybuild = Command([sys.executable, "-m", "builder.cli", "-q", "-o", "-", from_context],
                      before=lambda: shutil.rmtree(pull_cache, ignore_errors=True),
                      cwd=str(ROOT), env=dict(bench.env, PYBUILD_CACHE_DIR=pull_cache)).run()
    layout = os.path.join(bench.work, "layout")
    skopeo = Command(["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{source}",
                      f"oci:{layout}:x"],
                     before=lambda: shutil.rmtree(layout, ignore_errors=True)).run()
    bench.docker_images.append(source)
    docker = _wall(Command([DOCKER, "pull", "-q", source],
                           before=lambda: subprocess.run([DOCKER, "rmi", "-f", source],
                                                         capture_output=True)).run())
    bench.table.add("pull: skopeo copy docker:// oci: (no decompression)", skopeo)
    bench.table.add("pull: docker pull (decompress + extract)", docker)
    bench.table.add("pull: pybuild FROM it, empty cache (decompress into the store)", pybuild,
                    versus=("docker", docker), at_most=1)
    bench.table.add("    the same against skopeo", pybuild, versus=("skopeo", skopeo))
    bench.table.check()


def test_cache_import(bench: Bench) -> None:
    cache_ref = f"{bench.registry.address}/cache:main"
    bench.pybuild("push", "-o", os.devnull, "--cache-to", f"type=registry,ref={cache_ref}").run()
    imported = bench.pybuild("import", "-o", os.devnull, "--cache-from", cache_ref).run()
    cold = bench.pybuild("cold", "-o", os.devnull, "--no-cache",
                         before=lambda: subprocess.run(
                             [sys.executable, "-m", "builder.cli", "load", "-q", "-i",
                              os.path.join(bench.work, "busybox.tar")], cwd=str(ROOT),
                             env=dict(bench.env, PYBUILD_CACHE_DIR=os.path.join(bench.work,
                                                                                 "cold")),
                             check=True)).run()
    bench.table.add("cache: cold build on an empty runner", cold)
    bench.table.add("cache: empty runner with --cache-from the registry", imported,
                    versus=("cold", cold), goal="every step reused")
