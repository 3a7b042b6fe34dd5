"""The candidate's side of a case: its command template filled in and run with bash, its
tarball loaded into Docker and captured as Docker's own image is."""
from __future__ import annotations

import os
import shlex
import time
import uuid

from tests.conformance import engine
from tests.conformance.cases import Case, Staged
from tests.conformance.outcome import Outcome, tail

PLACEHOLDERS = ("dockerfile", "context", "tag", "out", "buildargs", "target", "target_name",
                "case", "network", "secrets", "workdir")


def command(template: str, case: Case, staged: Staged, tag: str, out: str) -> str:
    """The template with every placeholder replaced by its shell-quoted value."""
    quote = shlex.quote
    return template.format_map({
        "dockerfile": quote(str(staged.dockerfile)),
        "context": quote(str(staged.context)),
        "tag": quote(tag),
        "out": quote(out),
        "buildargs": " ".join(f"--build-arg {quote(f'{k}={v}')}" for k, v in case.all_build_args.items()),
        "target": f"--target {quote(case.target)}" if case.target else "",
        "target_name": quote(case.target or ""),
        "case": quote(case.name),
        "network": f"--network {case.network}" if case.network != "none" else "",
        "secrets": " ".join(quote(f"--secret=id={k},src={(case.path / v).resolve()}")
                            for k, v in case.secrets.items()),
        "workdir": quote(str(staged.work)),
    })


def candidate(template: str, case: Case, staged: Staged, env: dict[str, str], cwd: str,
              timeout: int) -> Outcome:
    """Build with the candidate; for a successful build, its image as Docker sees it."""
    tag = f"conformance-candidate-{case.name}:{uuid.uuid4().hex[:10]}"
    out = staged.work / "image.tar"
    started = time.monotonic()
    ran = engine.run(["bash", "-c", command(template, case, staged, tag, str(out))],
                     timeout=timeout, env=dict(os.environ, **env), cwd=cwd)
    seconds = round(time.monotonic() - started, 2)
    if ran.returncode != 0:
        return Outcome(ran.returncode, tail(ran.output), seconds)
    if not out.exists():
        return Outcome(0, tail(ran.output), seconds, problem=f"exited 0 but wrote no tarball at {out}")
    loaded: list[str] = []
    try:
        tags = engine.archive_tags(str(out))
        # names other than the run's unique tag may already be Docker's: never remove those
        before = {name for name in tags if not name.endswith(tag) and engine.exists(name)}
        loaded = [name for name in engine.load(str(out), timeout) if name not in before]
        name = next((n for n in tags if n == tag or n.endswith("/" + tag)), tags[0] if tags else None)
        if name is None:
            return Outcome(0, tail(ran.output), seconds, problem="the tarball's image has no tag")
        return Outcome(0, tail(ran.output), seconds, image=engine.capture(name))
    except engine.EngineError as error:
        return Outcome(0, tail(ran.output), seconds, problem=str(error))
    finally:
        engine.remove(*(name for name in loaded if ":" in name and not name.startswith("sha256:")))
