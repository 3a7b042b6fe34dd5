"""builder/steps.py:select_copy: what a COPY or ADD will read and where it lands, resolved
before the cache key is computed and before anything is written."""
from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from builder.steps.copy import DataSource, TreeSource, UrlSource
from builder.sources.download import Downloads
from builder.sources.gitrepo import GitSources
from builder.sources.tree import StageTree
from builder.plan.state import StageState
from builder.steps.files import StepEnv, select_copy, workdir, write_copy
from builder.steps.users import Owner
from grammar.errors import DockerfileError
from grammar.parser import parse
from layers.image import ContainerConfig, ImageConfig
from layers.tarwriter import LayerWriter
from layers.union import UnionView
from tests.unit.trees import context, write_tree

FILES = {"a.txt": "a", "b.txt": "b", "src/x.py": "x", "link": "-> a.txt", "out": "-> ../up",
         "srclink": "-> /src", "outdir": "-> ../src"}
STATE = StageState(ImageConfig(config=ContainerConfig(working_dir="/app")),
                   scope={"F": "a.txt", "D": "dest"})


def select(tmp_path: Path, line: str, state: StageState = STATE, from_tree=None):
    tree = context(tmp_path / "ctx", FILES)
    env = StepEnv(context=tree, image_view=lambda s: UnionView([]),
                  from_tree=lambda: from_tree, commit_layer=None, now=42,
                  temp_dir=lambda: str(tmp_path),
                  downloads=lambda: Downloads(str(tmp_path / "downloads")),
                  git=lambda: GitSources(str(tmp_path / "git"), lambda: None))
    instruction = parse(f"FROM scratch\n{line}\n").instructions[1]
    return select_copy(state, instruction, env)


def names(selection) -> list[str]:
    return [s.name or s.found.rel if isinstance(s, TreeSource) else f"<<{s.name}"
            for s in selection.sources]


@pytest.mark.parametrize("line, sources, dest, dest_is_dir", [
    ("COPY a.txt /x", ["a.txt"], "/x", False),
    ("COPY a.txt x/", ["a.txt"], "/app/x", True),
    ("COPY $F ${D}", ["a.txt"], "/app/dest", False),
    ("COPY *.txt /d/", ["a.txt", "b.txt"], "/d", True),
    ("COPY nothing*.c /d/", [], "/d", True),
    ("COPY src/../a.txt .", ["a.txt"], "/app", True),
    ("COPY ./src /s", ["src"], "/s", False),
    ("COPY link /l", ["link"], "/l", False),
    ("COPY . ..", [""], "/", True),
    ("COPY a.txt b.txt /d/./", ["a.txt", "b.txt"], "/d", True),
    ("COPY srclink/*.py /d/", ["src/x.py"], "/d", True),
])
def test_sources_and_destination(tmp_path: Path, line: str, sources: list[str], dest: str,
                                 dest_is_dir: bool) -> None:
    selection = select(tmp_path, line)
    assert names(selection) == sources
    assert (selection.spec.dest, selection.spec.dest_is_dir) == (dest, dest_is_dir)
    assert selection.spec.keep_owner is False and selection.spec.now == 42


def test_a_followed_symlink_is_read_from_its_target(tmp_path: Path) -> None:
    (source,) = select(tmp_path, "COPY link /l").sources
    assert (source.name, source.found.rel) == ("link", "a.txt")


def test_owner_and_mode(tmp_path: Path) -> None:
    selection = select(tmp_path, "COPY --chown=5:6 --chmod=4755 a.txt /x")
    assert (selection.spec.owner, selection.spec.chmod) == (Owner(5, 6), 0o755)
    assert select(tmp_path, "COPY a.txt /x").spec.owner is None


def test_a_heredoc_source_is_expanded_unless_quoted(tmp_path: Path) -> None:
    expanded = select(tmp_path, "COPY <<EOF /f\n$F\nEOF")
    literal = select(tmp_path, "COPY <<'EOF' /f\n$F\nEOF")
    assert [s.data for s in expanded.sources] == [b"a.txt\n"]
    assert [s.data for s in literal.sources] == [b"$F\n"]
    assert isinstance(expanded.sources[0], DataSource)


@pytest.mark.parametrize("line, extract", [
    ("ADD a.txt /x", True), ("ADD --unpack=false a.txt /x", False), ("COPY a.txt /x", False),
])
def test_add_extracts_archives_unless_told_not_to(tmp_path: Path, line: str,
                                                  extract: bool) -> None:
    assert select(tmp_path, line).extract is extract


def test_copy_from_reads_another_tree_and_keeps_its_owners(tmp_path: Path) -> None:
    stage = StageTree(UnionView([str(write_tree(tmp_path / "stage", {"bin/tool": "t"}))]))
    selection = select(tmp_path, "COPY --from=builder /bin/tool /usr/bin/", from_tree=stage)
    assert names(selection) == ["bin/tool"] and selection.from_stage == "builder"
    assert selection.spec.keep_owner is True


@pytest.mark.parametrize("line, error, message", [
    ("COPY missing /x", DockerfileError, "'missing': not found in the build context"),
    ("COPY /etc/passwd /x", DockerfileError, "source '/etc/passwd' is outside the build context"),
    ("COPY ../a /x", DockerfileError, "source '../a' is outside the build context"),
    ("COPY out /x", DockerfileError, "source 'out' is a symlink out of the build context"),
    ("COPY outdir/* /x/", DockerfileError,
     "source 'outdir/\\*' is a symlink out of the build context"),
    ("COPY --chmod=u+x a.txt /x", DockerfileError, "invalid --chmod=u\\+x"),
    ("COPY --chmod=999 a.txt /x", DockerfileError, "invalid --chmod=999"),
    ("COPY --from=nope a.txt /x", DockerfileError, "COPY --from=nope: no stage, image"),
    ("ADD https://example.com/x.git#-x /x", DockerfileError, "not a branch, tag or commit"),
    ("ADD --keep-git-dir a.txt /x", DockerfileError, "--keep-git-dir needs a git URL"),
    ("COPY --exclude=[ a.txt /x", DockerfileError, "COPY --exclude:"),
])
def test_refused(tmp_path: Path, line: str, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        select(tmp_path, line)


def test_a_url_is_selected_without_a_request(tmp_path: Path) -> None:
    """Selecting names the file; nothing is fetched until the key or the layer needs it (the
    host here resolves nowhere)."""
    checksum = "sha256:" + "a" * 64
    selection = select(tmp_path, f"ADD --checksum={checksum} http://h.invalid/a/b.tgz?x=1 /d/")
    (source,) = selection.sources
    assert isinstance(source, UrlSource)
    assert (source.name, source.checksum, source.digest()) == ("b.tgz", checksum, checksum)
    assert not (tmp_path / "downloads").exists()


class Layers:
    """commit_layer for a StepEnv: each layer written to memory, its member names kept."""

    def __init__(self) -> None:
        self.members: list[list[str]] = []

    def commit(self, write) -> str:
        out = io.BytesIO()
        writer = LayerWriter(out)
        write(writer)
        digest = writer.finish().diff_id
        out.seek(0)
        with tarfile.open(fileobj=out) as tar:
            self.members.append(tar.getnames())
        return digest


def env_for(tmp_path: Path, layers: Layers, image: dict) -> StepEnv:
    view = UnionView([str(write_tree(tmp_path / "image", image))])
    return StepEnv(context=context(tmp_path / "ctx", FILES), image_view=lambda s: view,
                   from_tree=lambda: None, commit_layer=layers.commit, now=42,
                   temp_dir=lambda: str(tmp_path),
                   downloads=lambda: Downloads(str(tmp_path / "downloads")),
                  git=lambda: GitSources(str(tmp_path / "git"), lambda: None))


@pytest.mark.parametrize("line, working_dir, members", [
    ("WORKDIR /srv/app", "/srv/app", [["srv", "srv/app"]]),
    ("WORKDIR sub/../x", "/app/x", [["app", "app/x"]]),
    ("WORKDIR /srv//app/", "/srv//app/", [["srv", "srv/app"]]),
    ("WORKDIR /etc", "/etc", []),
    ("WORKDIR $D", "/app/dest", [["app", "app/dest"]]),
    ("WORKDIR /opt/w", "/opt/w", [["etc", "etc/w"]]),
    ("WORKDIR /opt", "/opt", []),
])
def test_workdir_makes_a_layer_only_for_a_new_directory(tmp_path: Path, line: str,
                                                        working_dir: str,
                                                        members: list) -> None:
    layers = Layers()
    instruction = parse(f"FROM scratch\n{line}\n").instructions[1]
    image = {"etc": None, "opt": "-> /etc"}
    state, diff_id = workdir(STATE, instruction, env_for(tmp_path, layers, image))
    assert state.image.config.working_dir == working_dir
    assert layers.members == members and (diff_id is None) == (members == [])


def test_write_copy_writes_the_layer_and_the_digests_asked_for(tmp_path: Path) -> None:
    layers = Layers()
    env = env_for(tmp_path, layers, {})
    selection = select(tmp_path, "COPY a.txt src /d/")
    diff_id, digests = write_copy(STATE, selection, env,
                                  frozenset({str(tmp_path / "ctx" / "a.txt")}))
    assert diff_id.startswith("sha256:")
    assert layers.members == [["d", "d/a.txt", "d/x.py"]]
    assert digests == {str(tmp_path / "ctx" / "a.txt"): hashlib.sha256(b"a").hexdigest()}
    assert write_copy(STATE, select(tmp_path, "COPY none*.c /d/"), env) == (None, {})


def test_add_extracts_a_local_tar_archive_judged_by_content(tmp_path: Path) -> None:
    (tmp_path / "ctx").mkdir()
    with tarfile.open(tmp_path / "ctx" / "bundle.data", "w") as tar:
        tar.add(__file__, arcname="inside.py")
    layers = Layers()
    env = env_for(tmp_path, layers, {})
    write_copy(STATE, select(tmp_path, "ADD bundle.data /opt/"), env)
    write_copy(STATE, select(tmp_path, "ADD --unpack=false bundle.data /opt/"), env)
    assert layers.members == [["opt", "opt/inside.py"], ["opt", "opt/bundle.data"]]
