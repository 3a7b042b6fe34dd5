"""Docker's side of a case: built once per case content and Docker version, then read from
the cache (`.difftest-cache/` under the repository, or $DIFFTEST_CACHE_DIR)."""
from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from pathlib import Path

from tests.conformance import engine
from tests.conformance.cases import Case, Staged, staged_digest
from tests.conformance.outcome import Outcome, tail

SCHEMA = 1  # bump when what capture() records changes: every cached result is rebuilt
ROOT = Path(__file__).resolve().parents[2]


def cache_dir() -> Path:
    return Path(os.environ.get("DIFFTEST_CACHE_DIR", ROOT / ".difftest-cache")) / "conformance"


def reference(case: Case, staged: Staged, docker_version: str, cache: Path, timeout: int,
              refresh: bool = False, base_key: str = "") -> tuple[Outcome, bool]:
    """Docker's outcome for the staged case, and whether it came from the cache; `base_key`
    names what else the result depends on (the base images' IDs)."""
    inputs = [SCHEMA, docker_version, staged_digest(staged), case.build_inputs()]
    key = hashlib.sha256(json.dumps(inputs + [base_key] if base_key else inputs,
                                    sort_keys=True).encode()).hexdigest()
    cached = cache / f"{case.name}.json"
    if not refresh and cached.exists():
        try:
            stored = json.loads(cached.read_text())
            if stored["key"] == key:
                return Outcome.from_json(stored["outcome"]), True
        except (ValueError, KeyError, TypeError):
            pass  # a damaged or older entry is rebuilt
    outcome = _build(case, staged, timeout)
    cache.mkdir(parents=True, exist_ok=True)
    temporary = cached.with_name(f".{cached.name}.{uuid.uuid4().hex}")
    temporary.write_text(json.dumps({"key": key, "outcome": outcome.to_json()}, sort_keys=True))
    temporary.rename(cached)
    return outcome, False


def _build(case: Case, staged: Staged, timeout: int) -> Outcome:
    tag = f"conformance-docker-{case.name}:{uuid.uuid4().hex[:10]}"
    started = time.monotonic()
    secrets = {key: str((case.path / name).resolve()) for key, name in case.secrets.items()}
    ran = engine.build(case.reference, str(staged.dockerfile), str(staged.context), tag,
                       case.all_build_args, case.target, case.network, secrets, timeout)
    seconds = round(time.monotonic() - started, 2)
    if ran.returncode != 0:
        return Outcome(ran.returncode, tail(ran.output), seconds)
    try:
        return Outcome(0, tail(ran.output), seconds, image=engine.capture(tag))
    finally:
        engine.remove(tag)
