"""Dockerfile checks as `pybuild --check` reports them, against golden files: per rule of
BuildKit's build checks, testdata/lint/<Rule>/triggers/ (a Dockerfile that triggers the rule)
and passes/ (one that must not), each with `expected.txt`, the report. `pytest --update-golden`
rewrites the reports; review the diff."""
from __future__ import annotations

from pathlib import Path

import pytest

from builder.checks import dockerfile_checks
from builder.cli.calls import check_report
from grammar.parser import parse
from tests.support import ROOT

LINT = ROOT / "testdata" / "lint"
CASES = sorted(p.parent for p in LINT.glob("*/*/Dockerfile"))
# Cases of a directive rather than of one rule.
NOT_RULES = {"skip"}


def test_every_rule_has_both_cases() -> None:
    for rule in (p for p in LINT.iterdir() if p.is_dir() and p.name not in ("outline",)):
        assert {p.name for p in rule.iterdir()} == {"triggers", "passes"}, rule


@pytest.mark.parametrize("case", CASES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_check_report(case: Path, update_golden: bool) -> None:
    dockerfile = parse((case / "Dockerfile").read_text(), "Dockerfile")
    findings = dockerfile_checks(dockerfile, str(case), None)
    report = check_report(dockerfile, findings)
    golden = case / "expected.txt"
    if update_golden:
        golden.write_text(report)
    assert report == golden.read_text()
    rule = case.parent.name
    if rule not in NOT_RULES:
        fired = {finding.rule for finding in findings}
        assert (rule in fired) == (case.name == "triggers"), fired


@pytest.mark.parametrize(("ignore", "sources", "expected"), [
    ("secret.txt\n", "secret.txt", ['"secret.txt"']),
    ("secret.txt\n", "./sub/../secret.txt", ['"secret.txt"']),
    ("cache\n", "cache/a cache", ['"cache/a"', '"cache"']),
    # An exception may re-include a file below an excluded directory: BuildKit does not guess.
    ("secret.txt\n!keep.txt\n", "secret.txt", []),
    # The root is reported only when a pattern leaves all of it out.
    ("secret.txt\n", ".", []),
    ("*\n", ".", ['"."']),
    ("**\n", "./", ['"."']),
    ("", "secret.txt", []),
])
def test_copy_ignored_file(ignore: str, sources: str, expected: list[str],
                           tmp_path: Path) -> None:
    if ignore:
        (tmp_path / ".dockerignore").write_text(ignore)
    dockerfile = parse(f"FROM scratch\nCOPY {sources} /dst/\n", "Dockerfile")
    findings = dockerfile_checks(dockerfile, str(tmp_path), None)
    assert [f.message for f in findings] == [
        f"Attempting to Copy file {name} that is excluded by .dockerignore" for name in expected]
