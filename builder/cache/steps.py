"""The step cache as one build sees it: lookups honouring --no-cache and --no-cache-filter, results
checked before reuse, miss reasons, and the records written after each step."""
from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterable, Mapping

from builder.cache.index import CacheIndex, FileMemo, StepRecord
from builder.cache.key import Inputs, miss_reason
from builder.cache.sources import describe_change
from builder.plan.state import RecordedState
from layers.blobstore import BlobStore
from layers.cachemanifest import CacheRecord

_CHUNK = 1 << 20


class StepCache:
    """Holds the index connection and the build's lease for the length of a build."""

    def __init__(self, cache_dir: str, blobs: BlobStore, no_cache: bool = False,
                 no_cache_stages: frozenset[str] = frozenset()) -> None:
        self.index = CacheIndex(cache_dir)
        self.index.take_lease()
        self.blobs = blobs
        self.no_cache = no_cache
        self.no_cache_stages = no_cache_stages
        self.damaged: dict[str, str] = {}
        self.imported: dict[str, CacheRecord] = {}
        self.imported_manifests: dict[str, list] = {}
        self.remote_available: Callable[[str], bool] = lambda diff_id: False
        self.unsettled: list[tuple[str, str, str, Inputs, dict]] = []

    def close(self) -> None:
        self.index.drop_lease()
        self.index.close()

    def add_imported(self, records: Iterable[CacheRecord], manifests: Mapping[str, list],
                     available: Callable[[str], bool]) -> None:
        """Records and source lists imported with --cache-from; `available` says which layers
        the registry holds (fetched only when a hit reads them)."""
        self.imported.update((record.key, record) for record in records)
        self.imported_manifests.update(manifests)
        self.remote_available = available

    def disabled_for(self, stage_label: str) -> bool:
        return self.no_cache or stage_label in self.no_cache_stages

    def earlier(self, key: str) -> StepRecord | None:
        """What an earlier build recorded for `key`, whatever --no-cache says: not a result to
        reuse, a hint of what running the step again will most likely make."""
        return self.index.lookup(key)

    def lookup(self, key: str, stage_label: str, slot: str, parent: str,
               inputs: Inputs) -> StepRecord | None:
        """A reusable result for `key`, or None. A result one of whose layer blobs (its own or one
        below it) is missing or no longer matches its digest is forgotten rather than used. Then
        the imported records (`--cache-from`) are asked: theirs may be layers not fetched yet."""
        if self.disabled_for(stage_label):
            return None
        record = self.index.lookup(key)
        if record is not None:
            layers = RecordedState.of(record.state).diff_ids
            broken = next((d for d in layers if not self._blob_intact(d)), None)
            if broken is None:
                self.index.touch(key, slot)
                return record
            self.index.forget(key)
            self.damaged[key] = broken
        imported = self.imported.get(key)
        if imported is None:
            return None
        state = imported.state
        recorded = RecordedState.of(state)
        if not all(self.remote_available(d) or self._blob_intact(d) for d in recorded.diff_ids):
            return None
        self.damaged.pop(key, None)
        self.unsettled.append((key, parent, slot, inputs, state))
        return StepRecord(key, parent, slot, inputs, recorded.own_layer, state, 0.0)

    def settle(self) -> None:
        """Record the imported hits whose layers are all here now, so the next build on this
        machine finds them without an import."""
        for key, parent, slot, inputs, state in self.unsettled:
            recorded = RecordedState.of(state)
            if all(self.blobs.has(d) for d in recorded.diff_ids):
                self.record(key, parent, slot, inputs, recorded.own_layer, state)
        self.unsettled.clear()

    def reason(self, key: str, slot: str, parent: str, inputs: Inputs, stage_label: str) -> str:
        """Why the step `key` runs, naming the first input that differs from the latest earlier
        build of the same step of the same Dockerfile. Changes nothing."""
        if self.no_cache:
            return "--no-cache"
        if stage_label in self.no_cache_stages:
            return f"--no-cache-filter {stage_label}"
        if key in self.damaged:
            return f"its cached layer {self.damaged[key]} was missing or damaged"
        before = self.index.latest_in_slot(slot)
        if before is None:
            before = self._imported_like(parent, inputs)
        return miss_reason(inputs, before.inputs if before else None,
                           before is not None and before.parent == parent, self._describe_sources)

    def _imported_like(self, parent: str, inputs: Inputs) -> StepRecord | None:
        """The imported record closest to a step this machine never ran: one with the same
        parent, else one of the same instruction (then an earlier step is what changed)."""
        candidates = [r for r in self.imported.values() if r.parent == parent] or [
            r for r in self.imported.values()
            if dict(r.inputs).get("instruction") == inputs.get("instruction")]
        if not candidates:
            return None
        same = [r for r in candidates
                if dict(r.inputs).get("instruction") == inputs.get("instruction")]
        chosen = (same or candidates)[0]
        return StepRecord(chosen.key, chosen.parent, "", Inputs(chosen.inputs), None,
                          chosen.state, 0.0)

    def record(self, key: str, parent: str, slot: str, inputs: Inputs, diff_id: str | None,
               state: dict) -> None:
        if diff_id is not None:
            self.index.remember_blob(diff_id, os.stat(self.blobs.path(diff_id)))
        self.index.record(key, parent, slot, inputs, diff_id, state)

    def file_memos(self, prefix: str) -> dict[str, tuple]:
        return self.index.file_memos(prefix)

    def remember(self, learned: list[tuple[str, FileMemo]], manifest_digest: str,
                 manifest_text: str) -> None:
        """Remember new file digests, and what the step read (for "src/app.py changed"): the
        manifest's JSON text, as its digest was computed from it."""
        self.index.remember_files(learned)
        self.index.put_manifest(manifest_digest, manifest_text)

    def scanned(self, signature: str | None) -> str | None:
        """The manifest digest of sources whose lstats had this signature, if known."""
        return self.index.scanned(signature) if signature else None

    def remember_scan(self, signature: str | None, manifest_digest: str) -> None:
        if signature:
            self.index.remember_scan(signature, manifest_digest)

    def stored_parse(self, key: str) -> bytes | None:
        return self.index.parsed(key)

    def store_parse(self, key: str, body: bytes) -> None:
        self.index.remember_parse(key, body)

    def output_holds(self, path: str, identity: str) -> bool:
        """Whether the tarball at `path` is the one this cache wrote there for `identity` (and
        nobody touched it since): then it need not be written again. Only a regular file can
        hold it (a FIFO's reader or /dev/null always gets the whole archive)."""
        if path == "-":
            return False
        try:
            st = os.stat(path)
        except OSError:
            return False
        return stat.S_ISREG(st.st_mode) and self.index.output(os.path.abspath(path)) == (
            identity, st.st_size, st.st_mtime_ns, st.st_ino)

    def remember_output(self, path: str, identity: str) -> None:
        if path != "-":
            st = os.stat(path)
            if stat.S_ISREG(st.st_mode):
                self.index.remember_output(os.path.abspath(path), identity, st)

    def source_manifests(self, records: tuple[CacheRecord, ...]) -> dict[str, list]:
        """The source lists of the COPY steps among `records`, by digest, for an export."""
        digests = {d for r in records if (d := dict(r.inputs).get("sources"))}
        return {d: m for d in sorted(digests) if (m := self._manifest(d)) is not None}

    def _manifest(self, digest: str) -> list | None:
        found = self.index.manifest(digest)
        return found if found is not None else self.imported_manifests.get(digest)

    def _describe_sources(self, old_digest: str, new_digest: str) -> str:
        return describe_change(self._manifest(old_digest), self._manifest(new_digest))

    def _blob_intact(self, digest: str) -> bool:
        """Cheap when the blob's stat is what it was when written; otherwise it is hashed, and a
        blob that no longer matches its name is deleted."""
        path = self.blobs.path(digest)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return False
        if self.index.blob_stat(digest) == (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino):
            return True
        hasher = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                hasher.update(chunk)
        if "sha256:" + hasher.hexdigest() != digest:
            os.unlink(path)
            self.index.forget_blob(digest)
            return False
        self.index.remember_blob(digest, st)
        return True

