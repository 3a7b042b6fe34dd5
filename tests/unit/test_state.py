"""builder/state.py: a stage's state between instructions: variables, config and history
changes, the chain key, and the JSON the cache keeps."""
from __future__ import annotations

import pytest

from builder.cache.key import Inputs, step_key
from builder.plan.state import BuildArgs, RecordedState, StageState
from layers.image import ContainerConfig, History, ImageConfig

IMAGE = ImageConfig(config=ContainerConfig(env=("PATH=/bin", "HOME=/root"), working_dir="/"))
STATE = StageState(IMAGE, scope={"PATH": "/bin", "HOME": "/root"})


def test_a_variable_replaces_one_of_the_same_name_in_place_and_others_are_appended() -> None:
    state = STATE.with_variable("HOME", "/home/app").with_variable("V", "1")
    assert state.scope == {"PATH": "/bin", "HOME": "/home/app", "V": "1"}
    assert STATE.scope == {"PATH": "/bin", "HOME": "/root"}, "states are values"
    assert state.image.config.env == IMAGE.config.env, "a variable is not an ENV"


@pytest.mark.parametrize("word, expanded", [
    ("$HOME/x", "/root/x"), ("${HOME}", "/root"), ("${MISSING:-d}", "d"), ("\\$HOME", "$HOME"),
    ("${HOME:+set}", "set"), ("$MISSING", ""),
])
def test_words_expand_with_the_variables_in_scope(word: str, expanded: str) -> None:
    assert STATE.expand(word) == expanded


def test_a_backtick_escape_is_the_stages_escape() -> None:
    state = StageState(IMAGE, scope=STATE.scope, escape="`")
    assert (state.expand("`$HOME"), state.expand("\\$HOME")) == ("$HOME", "\\/root")


def test_expand_split_gives_words() -> None:
    assert STATE.with_variable("P", "80 443").expand_split("$P 8080") == ["80", "443", "8080"]


def test_history_adds_a_layer_only_when_the_step_made_one() -> None:
    empty = STATE.with_history(History("ENV A=1", "", empty_layer=True))
    layered = empty.with_history(History("RUN make", ""), "sha256:l1")
    assert empty.image.diff_ids == () and len(empty.image.history) == 1
    assert layered.image.diff_ids == ("sha256:l1",)
    assert [h.created_by for h in layered.image.history] == ["ENV A=1", "RUN make"]


def test_with_config_changes_only_the_named_fields() -> None:
    state = STATE.with_config(user="app", cmd=("sh",))
    assert (state.image.config.user, state.image.config.cmd) == ("app", ("sh",))
    assert state.image.config.env == IMAGE.config.env and state.scope == STATE.scope


def test_the_chain_key_folds_in_pending_config_steps() -> None:
    bare = StageState(IMAGE, key="k1")
    pending = (("step ENV", "ENV A=1"),)
    assert bare.chain_key() == "k1"
    assert StageState(IMAGE, key="k1", pending=pending).chain_key() == step_key(
        "k1", Inputs(pending))
    assert StageState(IMAGE, key="k1", pending=pending).chain_key() != StageState(
        IMAGE, key="k1", pending=(("step ENV", "ENV A=2"),)).chain_key()


def test_the_json_the_cache_keeps_gives_the_state_back() -> None:
    state = STATE.with_config(user="app").with_variable("V", "1").with_history(
        History("RUN x", "2026-01-01T00:00:00Z"), "sha256:l1")
    state = StageState(state.image, state.scope, cmd_set=True, escape="`", key="old",
                       pending=(("a", "b"),))
    back = StageState.from_json(state.to_json(), "`", "k2")
    assert back == StageState(state.image, state.scope, cmd_set=True, escape="`", key="k2")
    assert state.to_json()["image"]["rootfs"]["diff_ids"] == ["sha256:l1"]


@pytest.mark.parametrize("given, globals_, default, value", [
    ({"V": "cli"}, {"V": "global"}, "default", "cli"),
    ({}, {"V": "global"}, "default", "default"),
    ({}, {"V": "global"}, None, "global"),
    ({"V": None}, {"V": "global"}, None, "global"),
    ({}, {}, None, None),
    ({}, {}, "$HOME/x", "/root/x"),
])
def test_an_args_value_is_the_build_arg_else_its_default_else_the_global(
        given: dict, globals_: dict, default: str | None, value: str | None) -> None:
    assert BuildArgs(given, globals_).value("V", default, STATE) == value


@pytest.mark.parametrize("history, diff_ids, own", [
    ([{}], ["sha256:a", "sha256:b"], "sha256:b"),
    ([{}, {"empty_layer": True}], ["sha256:a"], None),  # a WORKDIR that made no layer
    ([], [], None),
    ([{}], [], None),
])
def test_a_recorded_state_names_its_layers_and_the_one_its_step_made(history, diff_ids, own):
    recorded = RecordedState.of({"image": {"rootfs": {"diff_ids": diff_ids}, "history": history},
                                 "scope": [], "cmd_set": False})
    assert recorded == RecordedState(tuple(diff_ids), own)


def test_a_recorded_state_reads_what_to_json_wrote():
    state = StageState(ImageConfig()).with_history(History("COPY . /", "t"), "sha256:c")
    assert RecordedState.of(state.to_json()) == RecordedState(("sha256:c",), "sha256:c")
