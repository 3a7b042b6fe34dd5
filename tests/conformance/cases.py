"""Conformance cases: a directory with a Dockerfile, an optional case.json saying what Docker
does with it, and an optional setup.sh making what git cannot hold. Loading checks the metadata;
staging makes a private copy both builders build; the digest of that copy keys Docker's cached
result."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

META_FILES = ("case.json", "setup.sh")
KEYS = {"expect", "error_line", "build_args", "target", "tags", "reference", "notes",
        "network", "secrets", "ignore_paths", "differs", "serve"}


class CaseError(ValueError):
    """A case directory whose metadata the harness cannot use."""


@dataclass(frozen=True)
class Case:
    path: Path
    expect: str = "ok"
    error_line: int | None = None
    build_args: dict[str, str] = field(default_factory=dict)
    target: str | None = None
    tags: tuple[str, ...] = ()
    reference: str = "buildkit"  # which Docker builder is the oracle: buildkit or legacy
    network: str = "none"  # "host" lets both builders reach package mirrors
    secrets: dict[str, str] = field(default_factory=dict)  # id -> file of the case directory
    ignore_paths: tuple[str, ...] = ()  # volatile paths (globs allowed) dropped on both sides
    differs: tuple[str, ...] = ()  # deliberate differences: each a substring of one reported
    serve: str | None = None  # a directory of the staged context served on 127.0.0.1 (serve.py)
    notes: str = ""
    # build args only this run knows (a local server's address): given to both builders, never
    # part of Docker's cache key, so an image must not keep them
    run_args: dict[str, str] = field(default_factory=dict)

    @property
    def all_build_args(self) -> dict[str, str]:
        return {**self.run_args, **self.build_args}

    @property
    def name(self) -> str:
        return self.path.name

    def build_inputs(self) -> dict:
        """What of the metadata reaches Docker's build (notes and expectations do not)."""
        from tests.conformance.serve import SERVER_ARG
        build_args = {k: v for k, v in self.build_args.items()
                      if not (self.serve and k == SERVER_ARG)}
        return {"build_args": build_args, "target": self.target, "network": self.network,
                "reference": self.reference,
                "secrets": {key: _file_digest(self.path / name) for key, name in self.secrets.items()}}


def load_case(path: Path) -> Case:
    meta = json.loads((path / "case.json").read_text()) if (path / "case.json").exists() else {}
    problems = []
    if unknown := set(meta) - KEYS:
        problems.append(f"unknown keys {sorted(unknown)}")
    if meta.get("expect", "ok") not in ("ok", "error"):
        problems.append("expect must be ok or error")
    if meta.get("reference", "buildkit") not in ("buildkit", "legacy"):
        problems.append("reference must be buildkit or legacy")
    if meta.get("network", "none") not in ("none", "host"):
        problems.append("network must be none or host")
    if not (path / "Dockerfile").is_file():
        problems.append("no Dockerfile")
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", path.name):
        problems.append("a case name is lower case [a-z0-9._-] (it becomes an image tag)")
    if problems:
        raise CaseError(f"{path.name}: " + "; ".join(problems))
    return Case(path=path, expect=meta.get("expect", "ok"), error_line=meta.get("error_line"),
                build_args={str(k): str(v) for k, v in meta.get("build_args", {}).items()},
                target=meta.get("target"), tags=tuple(meta.get("tags", ())),
                reference=meta.get("reference", "buildkit"), network=meta.get("network", "none"),
                secrets={str(k): str(v) for k, v in meta.get("secrets", {}).items()},
                ignore_paths=tuple(str(p).strip("/") for p in meta.get("ignore_paths", ())),
                differs=tuple(meta.get("differs", ())), notes=meta.get("notes", ""),
                serve=meta.get("serve"))


def load_cases(directory: Path, select: str | None = None,
               skip_tags: tuple[str, ...] = ()) -> list[Case]:
    """The cases under `directory` in name order; `select` is a regular expression on names."""
    cases = [load_case(path) for path in sorted(directory.iterdir())
             if path.is_dir() and not path.name.startswith(".")]
    return [case for case in cases
            if (select is None or re.search(select, case.name)) and not set(case.tags) & set(skip_tags)]


@dataclass(frozen=True)
class Staged:
    """A private copy of a case: `root` holds `context` (Dockerfile inside) and what setup.sh
    put beside it; `work` is scratch space for the builders."""
    root: Path

    @property
    def context(self) -> Path:
        return self.root / "context"

    @property
    def dockerfile(self) -> Path:
        return self.context / "Dockerfile"

    @property
    def work(self) -> Path:
        return self.root / "work"


def stage(case: Case, under: Path) -> Staged:
    """Copy the case with git's modes (0755 dirs; 0644 files, 0755 executable ones), then run
    its setup.sh in the copy."""
    staged = Staged(under / case.name)
    shutil.rmtree(staged.root, ignore_errors=True)
    left_out = set(META_FILES) | set(case.secrets.values())
    shutil.copytree(case.path, staged.context, symlinks=True,
                    ignore=lambda d, names: [n for n in names if Path(d) == case.path and n in left_out])
    for directory, _, files in os.walk(staged.context):
        os.chmod(directory, 0o755)
        for name in files:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                os.chmod(path, 0o755 if os.stat(path).st_mode & 0o111 else 0o644)
    if (case.path / "setup.sh").exists():
        done = subprocess.run(["sh", "-e", str((case.path / "setup.sh").resolve())],
                              cwd=staged.context, capture_output=True, text=True, timeout=300,
                              env=dict(os.environ, LC_ALL="C.UTF-8"))
        if done.returncode != 0:
            raise CaseError(f"{case.name}: setup.sh failed ({done.returncode}): "
                            f"{(done.stdout + done.stderr)[-500:]}")
    staged.work.mkdir()
    return staged


def staged_digest(staged: Staged) -> str:
    """The staged tree (after setup.sh) as a digest: names, types, modes, owners, contents,
    symlink targets (the staging path itself replaced) and hardlink groups; never times."""
    digest = hashlib.sha256()
    first_name: dict[tuple[int, int], str] = {}
    for directory, dirs, files in os.walk(staged.root):
        dirs.sort()
        if Path(directory) == staged.root and "work" in dirs:
            dirs.remove("work")
        for name in sorted(dirs + files):
            path = os.path.join(directory, name)
            relative = os.path.relpath(path, staged.root)
            st = os.lstat(path)
            line = f"{relative}\0{stat.S_IFMT(st.st_mode)}\0{stat.S_IMODE(st.st_mode)}\0{st.st_uid}:{st.st_gid}"
            if stat.S_ISLNK(st.st_mode):
                line += "\0" + os.readlink(path).replace(str(staged.root), "<stage>")
            elif stat.S_ISREG(st.st_mode):
                inode = (st.st_dev, st.st_ino)
                if st.st_nlink > 1 and inode in first_name:
                    line += "\0link " + first_name[inode]
                else:
                    first_name[inode] = relative
                    line += "\0" + _file_digest(Path(path))
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                line += f"\0{os.major(st.st_rdev)},{os.minor(st.st_rdev)}"
            digest.update(line.encode(errors="surrogateescape") + b"\n")
    return digest.hexdigest()


def _file_digest(path: Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()
