"""The state of a stage between two instructions, and the variables an instruction sees."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping

from builder.cache.key import Inputs, step_key
from grammar.expand import expand_word, expand_words
from layers.image import History, ImageConfig

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class RecordedState:
    """What the cache reads of a recorded state (`StageState.to_json`) without rebuilding the
    state: the layers it names, and the one its step made."""

    diff_ids: tuple[str, ...]
    own_layer: str | None  # None when the step made no layer

    @staticmethod
    def of(data: dict) -> "RecordedState":
        image = data["image"]
        diff_ids = tuple(image["rootfs"]["diff_ids"])
        history = image.get("history") or [{}]
        own = None if history[-1].get("empty_layer") or not diff_ids else diff_ids[-1]
        return RecordedState(diff_ids, own)


@dataclass(frozen=True)
class StageState:
    """An image being built: its config (with layers and history) plus what only the build
    knows: the variables in scope and whether this stage set CMD itself.

    `scope` is what `$NAME` means and what RUN will see: ENV and ARG both set it and the latest
    one wins (BuildKit keeps one environment for both), while only ENV reaches the image config.
    A stage built on another stage inherits its scope, ARG values included, as BuildKit does.
    `scope` is a mapping no one mutates: a step shares it with its parent state and reads it
    without a copy, so a step costs the same whatever the number of variables before it."""

    image: ImageConfig
    scope: Mapping[str, str] = field(default_factory=dict)
    cmd_set: bool = False
    escape: str = "\\"
    key: str = ""
    pending: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict:
        """What the cache keeps of a state (the escape character comes from the Dockerfile)."""
        return {"image": self.image.to_json(), "scope": [list(item) for item in self.scope.items()],
                "cmd_set": self.cmd_set}

    def chain_key(self) -> str:
        """The cache key of the state as a whole: the last layer step's key, extended by the
        config-only steps since (they are folded into the next layer step's inputs, so its miss
        can name them: `ARG VERSION 1.2 -> 1.3`)."""
        return step_key(self.key, Inputs(self.pending)) if self.pending else self.key

    @staticmethod
    def from_json(data: dict, escape: str, key: str) -> "StageState":
        return StageState(ImageConfig.from_json(data["image"]),
                          dict(data["scope"]), data["cmd_set"], escape, key)

    def variables(self) -> dict[str, str]:
        """A copy of the scope, the caller's to change."""
        return dict(self.scope)

    def with_variable(self, name: str, value: str) -> "StageState":
        return replace(self, scope={**self.scope, name: value})

    def expand(self, word: str) -> str:
        return expand_word(word, self.scope, self.escape)

    def expand_split(self, word: str) -> list[str]:
        return expand_words(word, self.scope, self.escape)

    def with_config(self, **changes) -> "StageState":
        return replace(self, image=replace(self.image, config=replace(self.image.config, **changes)))

    def with_history(self, entry: History, diff_id: str | None = None) -> "StageState":
        image = self.image
        diff_ids = image.diff_ids + ((diff_id,) if diff_id else ())
        return replace(self, image=replace(image, diff_ids=diff_ids, history=image.history + (entry,)))


@dataclass(frozen=True)
class BuildArgs:
    """`--build-arg` values and the ARGs of the global scope (before the first FROM)."""

    given: dict[str, str | None] = field(default_factory=dict)
    globals: dict[str, str | None] = field(default_factory=dict)

    def value(self, name: str, default: str | None, state: StageState) -> str | None:
        """An ARG's value: the build-arg, else its (expanded) default, else the global ARG's."""
        if self.given.get(name) is not None:
            return self.given[name]
        if default is not None:
            return state.expand(default)
        return self.globals.get(name)
