"""Whether a step runs: its cache key, computed once from what it reads, and the hit or the miss.

Three ways to the key of a COPY or ADD of context files, cheapest first:
- by signature: sources whose lstats are as at an earlier build have that build's manifest, so a
  rebuild of an unchanged context needs no memo and no rows;
- by content: the manifest from the per-file memo, hashing the few files it does not know;
- speculative: a cold context (much unknown, nothing to extract) is hashed while its layer is
  written, one read instead of two; the step runs, and its key follows from the digests then.
Any other step's key comes from its instruction and what stands for what it reads (a stage's key,
an image's ID, RUN's network).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from builder.cache.index import StepRecord
from builder.cache.key import Inputs, step_key
from builder.cache.sources import SourceScan, hash_files, manifest, scan, signature
from builder.cache.steps import StepCache
from builder.steps.files import CopySelection

Items = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Step:
    """A step as the cache sees it before it runs."""

    parent: str  # the key of the state it starts from
    pending: Items  # the config-only steps folded in since that key
    items: Items  # its own inputs: the instruction, and what stands for what it reads
    slot: str  # the same step of the same Dockerfile in earlier builds (for the miss reason)
    stage_label: str
    sources: CopySelection | None = None  # the context files (or a directory's) a COPY reads
    memos: Callable[[], dict[str, tuple]] = dict  # the remembered digests of those files


@dataclass(frozen=True)
class Hit:
    key: str
    record: StepRecord


@dataclass(frozen=True)
class Miss:
    key: str
    inputs: Inputs
    reason: str


@dataclass(frozen=True)
class Speculation:
    """A miss whose key waits for the digests of `unknown`, read while the layer is written."""

    step: Step
    scan: SourceScan
    signature: str | None

    @property
    def unknown(self) -> frozenset[str]:
        """The host paths of the files to hash on the way."""
        return frozenset(found.host for _, found in self.scan.unknown)

    def settle(self, cache: StepCache, digests: dict[str, str]) -> Miss:
        """The miss, once the layer is written and `digests` read."""
        sources = _learn(cache, self.scan, digests, self.signature)
        key, inputs = _keyed(self.step, self.step.items + (("sources", sources),))
        return _miss(cache, self.step, key, inputs)


Decision = Hit | Miss | Speculation


def decide(cache: StepCache, step: Step) -> Decision:
    if step.sources is None:
        return _look_up(cache, step, step.items)
    signed = signature(step.sources)
    known = cache.scanned(signed)
    if known is not None:
        return _look_up(cache, step, step.items + (("sources", known),))
    found = scan(step.sources, step.memos())
    if _speculate(step.sources, found):
        return Speculation(step, found, signed)
    digests = hash_files(item for _, item in found.unknown)
    sources = _learn(cache, found, digests, signed)
    return _look_up(cache, step, step.items + (("sources", sources),))


def sources_digest(cache: StepCache, selection: CopySelection,
                   memos: Callable[[], dict[str, tuple]]) -> str:
    """The `sources` input of what `selection` reads, never speculated: a RUN's bind mount of
    the context is keyed by it as a COPY of the same files would be."""
    signed = signature(selection)
    known = cache.scanned(signed)
    if known is not None:
        return known
    found = scan(selection, memos())
    return _learn(cache, found, hash_files(item for _, item in found.unknown), signed)


def _speculate(selection: CopySelection, found: SourceScan) -> bool:
    """Hash while writing when much is unknown, unless an ADD's archives must be read first."""
    return bool(found.unknown) and not (selection.extract or found.cheap_to_hash_first())


def _look_up(cache: StepCache, step: Step, items: Items) -> Hit | Miss:
    key, inputs = _keyed(step, items)
    record = cache.lookup(key, step.stage_label, step.slot, step.parent, inputs)
    return Hit(key, record) if record is not None else _miss(cache, step, key, inputs)


def _keyed(step: Step, items: Items) -> tuple[str, Inputs]:
    inputs = Inputs(step.pending + items)
    return step_key(step.parent, inputs), inputs


def _miss(cache: StepCache, step: Step, key: str, inputs: Inputs) -> Miss:
    return Miss(key, inputs, cache.reason(key, step.slot, step.parent, inputs, step.stage_label))


def _learn(cache: StepCache, found: SourceScan, digests: dict[str, str],
           signed: str | None) -> str:
    """Complete the scan with `digests` and remember what was learned; returns the manifest's
    digest (the step's `sources` input)."""
    learned = found.fill(digests)
    digest, text = manifest(found.rows)
    cache.remember(learned, digest, text)
    cache.remember_scan(signed, digest)
    return digest
