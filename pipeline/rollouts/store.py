"""The rollout cache: every completion ever generated, keyed so nothing is generated twice.

Layout: `$GRADUS_HOME/rollouts/<model-slug>@<revision>/<sampling-key>/` holds `sampling.json` and
append-only Parquet part files. Each generated batch is written as one part, atomically (tmp file +
rename), so a run killed at any moment loses at most the batch in flight and never leaves a torn
file; the next run generates only what is missing.

Each part has a `.sha256` sidecar written before the part appears, and every read verifies it: a
part changed after it was written (a flipped byte can turn a solved problem into an unsolved one
and still be valid Parquet) is an error naming the file, never a silent relabel.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.locks import locked
from pipeline.core.model import ModelSpec
from pipeline.core.records import Rollout, content_hash
from pipeline.core.storage import (
    BATCH_ROWS,
    StorageLayout,
    sha256_sidecar,
    verify_sha256,
    write_parquet_batches_checksummed,
    write_parquet_checksummed,
    write_text_atomic,
)
from pipeline.engines.base import Completion, GenerationRequest, SamplingConfig

COMPACT_ROWS = 250_000
"""Rows per part after compaction: few enough files to open cheaply, each still streamable."""
COMPACT_PARTS = 256
"""Compact once a store holds more parts than this: opening and checking thousands of small parts
costs more than the rows in them (10,000 parts of 16 rows read 13x slower than 79 parts)."""


class StoredRollouts:
    """The rollouts stored in one store folder: reading, scanning and compacting, which need no
    model or sampling settings (a dataset handle opens a store by its folder alone)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # <home>/rollouts/<model>@<revision>/<sampling key>/
        self.home = root.parent.parent.parent
        self._verified: dict[Path, tuple[int, int]] = {}
        """Parts whose checksum this store has verified, with the (size, mtime) seen then."""

    def parts(self) -> list[Path]:
        return sorted(self.root.glob("part-*.parquet"))

    def verified_parts(self) -> list[Path]:
        """Every part, each checked against its recorded sha256 (once per store object, again if
        the file changes); raises `IntegrityError` naming a damaged part and how to rebuild it."""
        parts = self.parts()
        for part in parts:
            stat = part.stat()
            if self._verified.get(part) == (stat.st_size, stat.st_mtime_ns):
                continue
            verify_sha256(part, f"delete {part} and {sha256_sidecar(part)}, then rematerialize `rollouts`: "
                                "only the rollouts that part held are generated again")
            self._verified[part] = (stat.st_size, stat.st_mtime_ns)
        return parts

    def _compaction_lock(self, shared: bool = False) -> AbstractContextManager[float]:
        """Held shared by every scan and exclusively by `compact`, so no reader ever opens a part
        that compaction has just merged away."""
        return locked(self.home, "rollouts", f"{self.root.parent.name}/{self.root.name}/compaction", shared=shared)

    def scan(
        self,
        problem_ids: Sequence[str] | pa.Array | pa.ChunkedArray,
        upto: np.ndarray | int | None = None,
        start: np.ndarray | int = 0,
        columns: Sequence[str] | None = None,
        batch_rows: int = BATCH_ROWS,
    ) -> Iterator[pa.RecordBatch]:
        """Stored rollouts of these problems with `start <= sample_index < upto` (per problem, in the
        order of `problem_ids`, or one bound for all; `upto=None`: no cap), in record batches of at
        most `batch_rows` rows, in write order, each key once: where racing runs both wrote a key,
        the first part wins. Every batch has a `position` column (the problem's index in
        `problem_ids`) before `columns` (default: all).

        Memory is bounded by the batch size plus one byte per (problem, sample index) seen, never
        by the rows stored: this is what reads a pool of a million problems.
        """
        if isinstance(problem_ids, (pa.Array, pa.ChunkedArray)):
            index = pd.Index(problem_ids.to_numpy(zero_copy_only=False))
        else:
            index = pd.Index(np.asarray(list(problem_ids), dtype=object))
        n = len(index)
        if not index.is_unique:
            raise ValueError("problem_ids has duplicates: scan each problem once")
        caps = None if upto is None else np.broadcast_to(np.asarray(upto, np.int64), (n,))
        lows = np.broadcast_to(np.asarray(start, np.int64), (n,))
        seen = np.zeros((n, int(caps.max()) if caps is not None and n else 0), dtype=bool)
        wanted = list(columns) if columns is not None else Rollout.SCHEMA.names
        read = list(dict.fromkeys(["problem_id", "sample_index", *wanted]))
        if n == 0:
            return
        with self._compaction_lock(shared=True):
            yield from self._scan(index, caps, lows, seen, wanted, read, batch_rows)

    def _scan(self, index: pd.Index, caps: np.ndarray | None, lows: np.ndarray, seen: np.ndarray,
              wanted: list[str], read: list[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
        for _, _, batch, rows, positions in self._fresh(index, caps, lows, seen, read, batch_rows):
            taken = batch.take(pa.array(rows))
            yield pa.RecordBatch.from_arrays(
                [pa.array(positions, pa.int64())] + [taken.column(c) for c in wanted],
                names=["position", *wanted],
            )

    def _fresh(self, index: pd.Index, caps: np.ndarray | None, lows: np.ndarray, seen: np.ndarray,
               read: list[str], batch_rows: int) -> Iterator[tuple[Path, int, pa.RecordBatch, np.ndarray, np.ndarray]]:
        """Per batch read: (its part, its first row's number in the part, the batch, the rows of it
        that `scan` keeps, their problems' positions)."""
        for part in self.verified_parts():
            offset = 0
            for batch in pq.ParquetFile(part).iter_batches(batch_size=batch_rows, columns=read):
                first_row, offset = offset, offset + batch.num_rows
                pos = index.get_indexer(batch.column("problem_id").to_numpy(zero_copy_only=False))
                idx = batch.column("sample_index").to_numpy().astype(np.int64)
                keep = pos >= 0
                keep &= idx >= lows[np.where(keep, pos, 0)]
                if caps is not None:
                    keep &= idx < caps[np.where(keep, pos, 0)]
                rows = np.flatnonzero(keep)
                if not len(rows):
                    continue
                pos_k, idx_k = pos[rows], idx[rows]
                if caps is None and idx_k.max() >= seen.shape[1]:
                    seen = np.pad(seen, ((0, 0), (0, int(idx_k.max()) + 1 - seen.shape[1])))
                # First occurrence within the batch, then not seen in an earlier part.
                _, first = np.unique(pos_k * (seen.shape[1] + 1) + idx_k, return_index=True)
                first.sort()
                fresh = first[~seen[pos_k[first], idx_k[first]]]
                if not len(fresh):
                    continue
                seen[pos_k[fresh], idx_k[fresh]] = True
                yield part, first_row, batch, rows[fresh], pos_k[fresh]

    def locate(
        self, problem_ids: Sequence[str], upto: np.ndarray | int, start: np.ndarray | int = 0,
        max_rows: int = BATCH_ROWS,
    ) -> Iterator[tuple[Path, np.ndarray, np.ndarray]]:
        """Where `scan`'s rows are, read from the key columns alone: (part, row numbers in it,
        their problems' positions in `problem_ids`), at most `max_rows` rows each, so that work on
        the rows can go where the parts are readable (Ray tasks on a shared filesystem) without
        the text passing through here. Hold `reading()` until that work has read them."""
        index = pd.Index(np.asarray(list(problem_ids), dtype=object))
        n = len(index)
        if not index.is_unique:
            raise ValueError("problem_ids has duplicates: locate each problem once")
        caps = np.broadcast_to(np.asarray(upto, np.int64), (n,))
        lows = np.broadcast_to(np.asarray(start, np.int64), (n,))
        if n == 0:
            return
        seen = np.zeros((n, int(caps.max())), dtype=bool)
        pending: tuple[Path, list[np.ndarray], list[np.ndarray]] | None = None
        for part, first_row, _, rows, positions in self._fresh(index, caps, lows, seen,
                                                                ["problem_id", "sample_index"], BATCH_ROWS):
            if pending is not None and pending[0] != part:
                yield from _spans(*pending, max_rows)
                pending = None
            if pending is None:
                pending = (part, [], [])
            pending[1].append(rows + first_row)
            pending[2].append(positions)
        if pending is not None:
            yield from _spans(*pending, max_rows)

    def reading(self) -> AbstractContextManager[float]:
        """Held while others read parts that `locate` named: no compaction merges them away meanwhile."""
        return self._compaction_lock(shared=True)

    def coverage(self, problem_ids: Sequence[str] | pa.Array, upto: np.ndarray | int) -> np.ndarray:
        """Which sample indices below `upto` are stored: a (problems x max upto) boolean matrix,
        read from the key columns alone."""
        n = len(problem_ids)
        caps = np.broadcast_to(np.asarray(upto, np.int64), (n,))
        have = np.zeros((n, int(caps.max()) if n else 0), dtype=bool)
        for batch in self.scan(problem_ids, caps, columns=["sample_index"]):
            have[batch.column("position").to_numpy(), batch.column("sample_index").to_numpy()] = True
        return have

    def existing(self, problem_ids: Iterable[str] | None = None) -> dict[str, set[int]]:
        """Sample indices already stored, per problem: for small pools and tests (`coverage` is
        what scales)."""
        ids = sorted(set(problem_ids)) if problem_ids is not None else self._stored_ids()
        have: dict[str, set[int]] = {}
        for batch in self.scan(ids, columns=["sample_index"]):
            for pos, idx in zip(batch.column("position").to_pylist(), batch.column("sample_index").to_pylist()):
                have.setdefault(ids[pos], set()).add(idx)
        return have

    def _stored_ids(self) -> list[str]:
        ids: set[str] = set()
        for part in self.verified_parts():
            ids.update(pq.read_table(part, columns=["problem_id"]).column("problem_id").unique().to_pylist())
        return sorted(ids)

    def load_allocated(self, allocation: pd.DataFrame) -> pd.DataFrame:
        """The stored rollouts an allocation asked for (`problem_id`, `trials` per problem), as one
        frame: for small pools only (evaluation sets, benches); the assets stream instead."""
        ids = allocation["problem_id"].tolist()
        return self.load(ids, dict(zip(ids, allocation["trials"].tolist())))

    def load(self, problem_ids: Iterable[str], max_samples: dict[str, int] | int | None = None) -> pd.DataFrame:
        """Stored rollouts of these problems, sorted by (problem_id, sample_index), one row per key.

        `max_samples` keeps only sample indices below the cap (a global int or per problem), so a run
        asking for n=4 reads 4 samples even when an earlier run stored 16. Builds a frame: for the
        whole pool at scale, `scan` it instead.
        """
        ids = sorted(set(problem_ids))
        upto: np.ndarray | int | None = max_samples if not isinstance(max_samples, dict) else np.array(
            [max_samples.get(pid, 0) for pid in ids], np.int64)
        batches = list(self.scan(ids, upto))
        if not batches:
            return Rollout.empty_frame()
        frame = pa.Table.from_batches(batches).drop_columns(["position"]).to_pandas()
        return frame.sort_values(["problem_id", "sample_index"], ignore_index=True)

    def compact(self, max_rows: int = COMPACT_ROWS) -> int:
        """Merge the part files into parts of up to `max_rows` rows, streamed (never more than a
        batch in memory); returns how many parts were merged.

        Rows keep their order, and the merged parts take the first merged part's place in the name
        order, so "the first part wins" still picks the same rows. Runs under the store's
        compaction lock; a reader that listed a part just merged away re-lists (`verified_parts`).
        """
        with self._compaction_lock():
            parts = self.verified_parts()
            if len(parts) < 2:
                return 0
            stem = parts[0].stem  # part-<time>-<uuid>: merged parts sort where the first one did

            stream = (batch for part in parts for batch in pq.ParquetFile(part).iter_batches(batch_size=BATCH_ROWS))
            pending = next(stream, None)

            def chunk() -> Iterator[pa.RecordBatch]:
                nonlocal pending
                rows = 0
                while pending is not None and (rows == 0 or rows + pending.num_rows <= max_rows):
                    rows += pending.num_rows
                    yield pending.cast(Rollout.SCHEMA)
                    pending = next(stream, None)

            written = 0
            while pending is not None:
                path = self.root / f"{stem}-c{written:04d}-{uuid.uuid4().hex[:8]}.parquet"
                write_parquet_batches_checksummed(chunk(), Rollout.SCHEMA, path)
                written += 1
            for p in parts:
                p.unlink()
                sha256_sidecar(p).unlink(missing_ok=True)
                self._verified.pop(p, None)
            return len(parts)


class RolloutStore(StoredRollouts):
    """Append-only Parquet store of rollouts for one (model, revision, sampling) label key."""

    def __init__(self, home: Path, model: ModelSpec, sampling: SamplingConfig, engine: str = "") -> None:
        super().__init__(StorageLayout(str(home)).rollouts(model.model_id, model.revision, sampling.key))
        self.home = home
        self.model = model
        self.sampling = sampling
        self.engine = engine
        self.root.mkdir(parents=True, exist_ok=True)
        params = self.root / "sampling.json"
        if not params.exists():
            write_text_atomic(json.dumps(asdict(sampling), indent=2, sort_keys=True), params)

    def generation_lock(self, problem_ids: Sequence[str]) -> AbstractContextManager[float]:
        """The lock held while generating rollouts of these problems under this label key: a second
        process asking for the same problems waits, then finds them stored and generates nothing.
        Keyed by the problem set too, so the shards of one run (disjoint sets) run in parallel."""
        ids = content_hash(*sorted(set(problem_ids)), length=16)
        return locked(self.home, "rollouts", f"{self.model.key}/{self.sampling.key}/{ids}")

    def append(self, requests: Sequence[GenerationRequest], completions: Sequence[Completion]) -> Path:
        """Persist one batch durably; returns the part file written."""
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        rows = [
            Rollout(
                problem_id=r.problem_id,
                sample_index=r.sample_index,
                text=c.text,
                num_tokens=c.num_tokens,
                finish_reason=c.finish_reason,
                model_id=self.model.model_id,
                revision=self.model.revision,
                sampling_key=self.sampling.key,
                engine=self.engine,
                created_at=now,
            )
            for r, c in zip(requests, completions, strict=True)
        ]
        path = self._new_part()
        write_parquet_checksummed(Rollout.to_table(rows), path)
        return path

    def _new_part(self) -> Path:
        # Names sort in write order, which is what "the first write wins" relies on.
        return self.root / f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"



def _spans(part: Path, rows: list[np.ndarray], positions: list[np.ndarray],
           max_rows: int) -> Iterator[tuple[Path, np.ndarray, np.ndarray]]:
    rows_all, positions_all = np.concatenate(rows), np.concatenate(positions)
    for at in range(0, len(rows_all), max_rows):
        yield part, rows_all[at : at + max_rows], positions_all[at : at + max_rows]


def read_rows(part: Path, rows: np.ndarray, columns: Sequence[str]) -> pa.Table:
    """These rows (numbers in the part, ascending) of one part, reading only the row groups that
    hold them."""
    file = pq.ParquetFile(part)
    bounds = np.cumsum([0] + [file.metadata.row_group(g).num_rows for g in range(file.num_row_groups)])
    groups = np.unique(np.searchsorted(bounds, rows, side="right") - 1)
    table = file.read_row_groups(groups.tolist(), columns=list(columns))
    # Rows of the groups read, renumbered from the first group's first row.
    base = np.concatenate([np.arange(bounds[g], bounds[g + 1]) for g in groups])
    return table.take(pa.array(np.searchsorted(base, rows)))


def scan_store(root: Path, problem_ids: pa.Array, upto: np.ndarray, columns: Sequence[str] | None = None,
               batch_rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
    """`StoredRollouts.scan` of the store in folder `root`."""
    return StoredRollouts(root).scan(problem_ids, upto, columns=columns, batch_rows=batch_rows)


PromptReader = Callable[[np.ndarray], Sequence[Any]]
"""The prompts of the problems at these row positions (ascending), in that order: for a pool whose
prompts stay on disk until a request needs them."""


def missing_requests(
    problems: pd.DataFrame, wanted: dict[str, int] | np.ndarray | int, stored: np.ndarray | None = None,
    prompts: PromptReader | None = None,
) -> list[GenerationRequest]:
    """The requests still to generate so each problem has sample indices 0..wanted-1 (`wanted`: one
    count for all, per problem id, or per row in order); `stored` is
    `RolloutStore.coverage` of the problems in their row order (None: nothing stored). Prompts come
    from `prompts` (default: the frame's `prompt` column), read only for problems with a gap."""
    ids = problems["problem_id"].tolist()
    if isinstance(wanted, int):
        caps = np.full(len(ids), wanted, np.int64)
    elif isinstance(wanted, np.ndarray):
        caps = wanted.astype(np.int64, copy=False)
    else:
        caps = np.array([wanted.get(pid, 0) for pid in ids], np.int64)
    width = int(caps.max()) if len(ids) else 0
    gaps = np.arange(width) < caps[:, None]
    if stored is not None and stored.size:
        gaps[:, : stored.shape[1]] &= ~stored[:, :width]
    rows, indices = np.nonzero(gaps)
    needed = np.unique(rows)
    read = prompts or (lambda at: problems["prompt"].iloc[at].tolist())
    prompt_of = dict(zip(needed.tolist(), read(needed)))
    return [GenerationRequest.of(ids[r], int(i), list(prompt_of[r])) for r, i in zip(rows.tolist(), indices.tolist())]
