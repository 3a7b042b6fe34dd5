"""A corpus run: the preflight probe, then every case staged, built by Docker (or read from
the cache) and by the candidate, and judged; cases run `jobs` at a time."""
from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from tests.conformance import engine
from tests.conformance.candidate import candidate
from tests.conformance.cases import Case, stage
from tests.conformance.compare import Verdict, judge
from tests.conformance.outcome import Outcome
from tests.conformance.reference import cache_dir, reference
from tests.conformance.serve import SERVER_ARG, served

PROBE = "FROM {base}\nRUN echo probe > /probe.txt\n"


@dataclass(frozen=True)
class Options:
    candidate: str  # the command template (candidate.PLACEHOLDERS)
    probe_base: str | None = None  # an image with a shell; None: no probe
    strict_lines: bool = False  # an error case's message must name its Dockerfile line
    env: Mapping[str, str] = field(default_factory=dict)  # added to the candidate's environment
    cwd: str = "."  # where the candidate's command runs
    work_root: Path | None = None  # where cases are staged (default: a temporary directory)
    cache: Path | None = None  # Docker's results (default: reference.cache_dir())
    refresh: bool = False  # rebuild Docker's side even when cached
    ignore_paths: tuple[str, ...] = ()  # dropped on both sides in every case
    expected: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # case -> differences
    timeout: int = 300
    jobs: int = 2
    build_args: Mapping[str, str] = field(default_factory=dict)  # Case.run_args of every case
    base_key: str = ""  # what else Docker's results depend on (the base images' IDs)


@dataclass(frozen=True)
class Result:
    case: Case
    verdict: Verdict
    docker: Outcome | None = None
    candidate: Outcome | None = None
    cached: bool = False
    seconds: float = 0.0


@dataclass(frozen=True)
class Run:
    docker_version: str
    probe_problem: str | None
    results: tuple[Result, ...]
    seconds: float


def run_corpus(cases: list[Case], options: Options,
               on_result: Callable[[Result], None] = lambda result: None) -> Run:
    started = time.monotonic()
    version = engine.server_version()
    if options.work_root:
        options.work_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="conformance-", dir=options.work_root))
    try:
        problem = probe(options, work) if options.probe_base else None

        def one(case: Case) -> Result:
            result = run_case(case, options, version, problem, work)
            on_result(result)
            return result

        with ThreadPoolExecutor(max(1, options.jobs)) as pool:
            results = tuple(pool.map(one, cases))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Run(version, problem, results, round(time.monotonic() - started, 1))


def run_case(case: Case, options: Options, docker_version: str, probe_problem: str | None,
             work: Path) -> Result:
    """One case, start to verdict; a harness or engine failure is a FAIL, never a pass."""
    started = time.monotonic()
    case = replace(case, run_args=dict(options.build_args))
    try:
        staged = stage(case, work)
        try:
            with contextlib.ExitStack() as stack:
                if case.serve:
                    url = stack.enter_context(served(staged.context / case.serve))
                    case = replace(case, build_args={**case.build_args, SERVER_ARG: url})
                docker, cached = reference(case, staged, docker_version,
                                           options.cache or cache_dir(), options.timeout,
                                           options.refresh, options.base_key)
                theirs = candidate(options.candidate, case, staged, dict(options.env),
                                   options.cwd, options.timeout)
        finally:
            shutil.rmtree(staged.root, ignore_errors=True)
        verdict = judge(case, docker, theirs, probe_problem, options.strict_lines,
                        options.ignore_paths, tuple(options.expected.get(case.name, ())))
        return Result(case, verdict, docker, theirs, cached, round(time.monotonic() - started, 2))
    except Exception as error:  # whatever broke, it is this case's FAIL, not the run's end
        return Result(case, Verdict("FAIL", (f"HARNESS: {type(error).__name__}: {error}",)),
                      seconds=round(time.monotonic() - started, 2))


def probe(options: Options, work: Path) -> str | None:
    """Build FROM <probe base> + RUN with the candidate: if that fails, its failing the error
    cases proves nothing. The problem, or None."""
    directory = work / "00-probe"
    directory.mkdir()
    (directory / "Dockerfile").write_text(PROBE.format(base=options.probe_base))
    case = Case(path=directory)
    staged = stage(case, work / "probe")
    outcome = candidate(options.candidate, case, staged, dict(options.env), options.cwd,
                        options.timeout)
    if outcome.returncode != 0:
        return f"rc={outcome.returncode}: {outcome.last_error()}"
    return outcome.problem
