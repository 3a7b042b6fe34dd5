"""`--metadata-file FILE`: what the build made, matching the iidfile and the tarball; nothing for a
failed build."""
from __future__ import annotations

import json
import tarfile
from pathlib import Path

from tests.support import pybuild


def test_metadata_matches_the_iidfile_and_the_tarball(tmp_path: Path) -> None:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "a.txt").write_text("a\n" * 1000)
    (context / "Dockerfile").write_text("FROM scratch\nCOPY a.txt /a.txt\nENV X=1\n"
                                        "COPY a.txt /b.txt\n")
    out, meta, iid = tmp_path / "out.tar", tmp_path / "meta.json", tmp_path / "iid"
    env = {"PYBUILD_CACHE_DIR": str(tmp_path / "cache")}
    args = ("-t", "meta:1", "-t", "meta:latest", "-o", str(out), "--iidfile", str(iid),
            "--metadata-file", str(meta), str(context))
    result = pybuild(*args, env=env)
    assert result.returncode == 0, result.stderr
    data = json.loads(meta.read_text())
    with tarfile.open(out) as archive:
        index = json.load(archive.extractfile("index.json"))
        (manifest,) = json.load(archive.extractfile("manifest.json"))
        sizes = {member.name: member.size for member in archive.getmembers()}
    assert data["containerimage.config.digest"] == iid.read_text()
    assert manifest["Config"] == "blobs/sha256/" + iid.read_text().removeprefix("sha256:")
    assert {m["digest"] for m in index["manifests"]} == {data["containerimage.digest"]}
    assert data["image.name"] == "meta:1,meta:latest"
    layers = data["pybuild.layers"]
    assert ["blobs/sha256/" + layer["diff_id"].removeprefix("sha256:") for layer in layers] == \
        manifest["Layers"]
    assert [layer["size"] for layer in layers] == [sizes[name] for name in manifest["Layers"]]
    assert (data["pybuild.steps_run"], data["pybuild.steps_cached"]) == (2, 0)
    copies = [s for s in data["pybuild.steps"] if "COPY" in s["title"]]
    assert [s["reason"] for s in copies] == ["no earlier build"] * 2
    assert [s["layer"] for s in copies] == [layer["diff_id"] for layer in layers]
    assert all(s["seconds"] >= 0 for s in data["pybuild.steps"])
    assert data["pybuild.seconds"] > 0 and data["pybuild.pushed"] == []

    again = pybuild(*args, env=env)
    assert again.returncode == 0, again.stderr
    data = json.loads(meta.read_text())
    assert (data["pybuild.steps_run"], data["pybuild.steps_cached"]) == (0, 2)
    assert [s["cached"] for s in data["pybuild.steps"] if "COPY" in s["title"]] == [True, True]

    (context / "Dockerfile").write_text("FROM scratch\nCOPY missing.txt /\n")
    meta.unlink()
    assert pybuild(*args, env=env).returncode == 1
    assert not meta.exists()
