"""`did you mean ...?` hints, chosen as BuildKit chooses them (util/suggest): the closest option
by edit distance, if it is closer than 3 edits; none when the word matches an option exactly,
because then the mistake is elsewhere."""
from __future__ import annotations

from collections.abc import Iterable


def suggest(word: str, options: Iterable[str], case_sensitive: bool) -> str | None:
    """The option `word` was probably meant to be. Without case sensitivity the answer takes
    the case of `word` when that is all lower or all upper (`cpy` -> `copy`, `CPY` -> `COPY`)."""
    wanted = word if case_sensitive else word.lower()
    best, best_distance = None, 3
    for option in options:
        candidate = option if case_sensitive else option.lower()
        if candidate == wanted:
            return None
        distance = _levenshtein(wanted, candidate)
        if distance < best_distance:
            best, best_distance = candidate, distance
    if best is None or case_sensitive:
        return best
    return best.upper() if word == word.upper() else best


def _levenshtein(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, ch in enumerate(a, start=1):
        current = [i]
        for j, other in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (ch != other)))
        previous = current
    return previous[-1]
