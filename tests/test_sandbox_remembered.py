"""The sandbox's probe answers kept between builds (builder/sandbox/remembered.py): kept under a
digest of the host's facts, never trusted when anything about them is off, and forgotten when a
RUN's sandbox fails to set up."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from builder.sandbox import Choice, choice_from, choice_record, remembered
from builder.sandbox.confine import Confinement, confinement_from, confinement_record
from builder.sandbox.namespaces import NamespaceSandbox
from builder.sandbox.seccomp import Filter, library_version
from tests.support import busybox_base, pybuild


def test_the_key_is_stable_and_follows_the_facts(tmp_path, monkeypatch):
    key = remembered.facts_key(str(tmp_path), "2.5.4")
    assert remembered.facts_key(str(tmp_path), "2.5.4") == key
    assert remembered.facts_key(str(tmp_path), "2.5.5") != key  # another libseccomp
    if os.path.isdir("/dev/shm") and os.stat("/dev/shm").st_dev != os.stat(tmp_path).st_dev:
        assert remembered.facts_key("/dev/shm", "2.5.4") != key  # another filesystem
    monkeypatch.setenv("PYBUILD_NO_OVERLAY", "1")  # a switch the probes read
    assert remembered.facts_key(str(tmp_path), "2.5.4") != key


@pytest.mark.parametrize("content", [
    None,                                                   # nothing remembered
    "{not json",                                            # damaged
    '["key", "answers"]',                                   # not an object
    json.dumps({"key": "another", "answers": {"a": {"x": 1}}}),  # another host's facts
    json.dumps({"key": "k", "answers": ["a"]}),
    json.dumps({"key": "k", "answers": {"a": "not an object"}}),
], ids=["missing", "damaged", "not-object", "other-key", "answers-list", "answer-string"])
def test_nothing_is_recalled_from_what_is_not_an_answer(tmp_path, content):
    path = tmp_path / "probes.json"
    if content is not None:
        path.write_text(content)
    assert remembered.recall(str(path), "k", "a") is None


def test_answers_are_kept_side_by_side_and_a_new_key_drops_the_old(tmp_path):
    path = str(tmp_path / "probes.json")
    remembered.remember(path, "k1", "a", {"x": 1})
    remembered.remember(path, "k1", "b", {"y": 2})
    assert (remembered.recall(path, "k1", "a"), remembered.recall(path, "k1", "b")) == \
        ({"x": 1}, {"y": 2})
    remembered.remember(path, "k2", "b", {"y": 3})
    assert remembered.recall(path, "k2", "a") is None
    assert remembered.recall(path, "k1", "b") is None
    remembered.forget(path)
    assert not os.path.exists(path)


@pytest.mark.parametrize("record", [
    None, {}, {"strategy": "namespaces", "overlay": True},
    {"strategy": "namespaces", "overlay": "yes", "reason": "r", "warning": None},
    {"strategy": "docker", "overlay": True, "reason": "r", "warning": None},
    {"strategy": "chroot", "overlay": False, "reason": 1, "warning": None},
    {"strategy": "chroot", "overlay": False, "reason": "r", "warning": 3},
])
def test_a_choice_is_not_made_of_a_bad_record(record):
    assert choice_from(record) is None


@pytest.mark.parametrize("strategy, overlay", [("namespaces", True), ("namespaces", False),
                                               ("rootless", True), ("chroot", False)])
def test_a_choice_comes_back_as_it_was(strategy, overlay):
    record = {"strategy": strategy, "overlay": overlay, "reason": "why", "warning": "careful"}
    choice = choice_from(record)
    assert (choice.sandbox.name, choice.sandbox.overlay, choice.reason, choice.warning) == \
        (strategy, overlay, "why", "careful")
    assert choice_record(choice) == record


@pytest.mark.parametrize("record", [
    None, {}, {"capabilities": "yes", "seccomp": None, "warnings": []},
    {"capabilities": True, "seccomp": None, "warnings": "w"},
    {"capabilities": True, "seccomp": None, "warnings": [1]},
    {"capabilities": True, "seccomp": "zz", "warnings": []},
    {"capabilities": True, "seccomp": 7, "warnings": []},
    {"capabilities": True, "seccomp": "", "warnings": []},
    {"capabilities": True, "seccomp": "00112233445566", "warnings": []},  # not whole instructions
])
def test_a_confinement_is_not_made_of_a_bad_record(record):
    assert confinement_from(record) is None


def test_a_confinement_comes_back_as_it_was():
    program = bytes(range(16))
    record = confinement_record(Confinement(None, Filter(program)), ["a warning"])
    confinement, warnings = confinement_from(json.loads(json.dumps(record)))
    assert (confinement.capabilities, confinement.seccomp.program, warnings) == \
        (None, program, ["a warning"])
    assert confinement_from({**record, "capabilities": True})[0].capabilities is not None


def test_choice_records_name_the_strategy_only():
    choice = Choice(NamespaceSandbox(overlay=False, rootless=True), "because")
    assert choice_record(choice) == {"strategy": "rootless", "overlay": False,
                                     "reason": "because", "warning": None}


def test_answers_are_used_and_a_wrong_one_costs_one_build(tmp_path):
    """The second build takes the first one's answers (its log shows the remembered reason).
    A remembered seccomp program the kernel refuses (one instruction that is no `ret`): the
    RUN's sandbox cannot be set up, that build fails naming it, the answers are forgotten, and
    the next build probes again and succeeds."""
    base = busybox_base(tmp_path)
    cache = tmp_path / "cache"
    env = {"PYBUILD_CACHE_DIR": str(cache)}
    assert pybuild("load", "-i", str(base), env=env).returncode == 0
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM busybox:test\nRUN echo hello > /hello\n")
    args = ("--no-cache", "--network", "none", "--progress", "plain", "-o",
            str(tmp_path / "image.tar"), str(context))
    first = pybuild(*args, env=env)
    assert first.returncode == 0, first.stderr
    probes = Path(cache / "sandbox-probes.json")
    data = json.loads(probes.read_text())
    data["answers"]["sandbox auto"]["reason"] = "remembered"
    probes.write_text(json.dumps(data))
    second = pybuild(*args, env=env)
    assert second.returncode == 0, second.stderr
    assert "sandbox: namespaces (remembered)" in second.stderr

    (what,) = [name for name in data["answers"] if name.startswith("confinement")]
    assert data["answers"][what]["seccomp"], "the default build has the seccomp profile"
    data["answers"][what]["seccomp"] = bytes(8).hex()
    probes.write_text(json.dumps(data))

    poisoned = pybuild(*args, env=env)
    assert poisoned.returncode == 1
    assert "pybuild sandbox:" in poisoned.stderr and "PR_SET_SECCOMP" in poisoned.stderr
    assert not probes.exists()

    again = pybuild(*args, env=env)
    assert again.returncode == 0, again.stderr
    assert json.loads(probes.read_text())["answers"][what]["seccomp"] != bytes(8).hex()


def test_libseccomp_names_its_version():
    assert library_version().count(".") == 2
