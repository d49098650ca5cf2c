"""Problem shards: a stable split of the pool so rollouts scale out over parallel workers.

Each shard is sampled by its own worker with its own engine; the shards write to the same rollout
store (its parts never collide) and are merged back in (problem_id, sample_index) order.

A problem's shard is a hash of its id, not its position: every worker computes the same split
without coordination (Python's `hash()` is salted per process, so it cannot be used), and adding
problems to the pool never moves existing ones to another shard.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.core.ids import IdIndex
from pipeline.core.records import content_hash
from pipeline.core.storage import BATCH_ROWS, write_parquet_checksummed
from pipeline.rollouts.handles import DatasetHandle
from pipeline.rollouts.store import RolloutStore

SHARDS_ENV = "GRADUS_SHARDS"


def default_shards() -> int:
    """The shard count from `$GRADUS_SHARDS`, else 1 (sharding pays off only with one engine per
    accelerator: on a small machine two engines just compete for the same cores)."""
    raw = os.environ.get(SHARDS_ENV, "").strip() or "1"
    try:
        shards = int(raw)
    except ValueError:
        raise ValueError(f"{SHARDS_ENV}={raw!r}: expected a positive integer") from None
    return _checked(shards)


def shard_of(problem_id: str, shards: int) -> int:
    """The shard (0 … shards-1) that samples this problem."""
    return int(content_hash(problem_id, length=16), 16) % _checked(shards)


def shard_indices(ids: pa.Array | pa.ChunkedArray, shards: int) -> np.ndarray:
    """`shard_of` every id, in order; a chunk of ids at a time is made Python strings (none for one shard)."""
    if _checked(shards) == 1:
        return np.zeros(len(ids), np.int64)
    out = np.empty(len(ids), np.int64)
    for start in range(0, len(ids), BATCH_ROWS):
        chunk = ids.slice(start, BATCH_ROWS).to_pylist()
        out[start:start + len(chunk)] = [shard_of(pid, shards) for pid in chunk]
    return out


def shard_rows(ids: pa.Array | pa.ChunkedArray, shards: int) -> dict[int, np.ndarray]:
    """The pool positions of each non-empty shard, by shard index, in pool order."""
    index = shard_indices(ids, shards)
    return {int(i): np.flatnonzero(index == i) for i in np.unique(index)}


def split_problems(problems: pd.DataFrame, shards: int) -> dict[int, pd.DataFrame]:
    """The non-empty shards of the pool, by shard index, each keeping the pool's row order."""
    ids = pa.array(problems["problem_id"].astype(str).to_numpy(), pa.string())
    return {i: problems.iloc[rows].reset_index(drop=True) for i, rows in shard_rows(ids, shards).items()}


def shard_budget(total_budget: int | None, shard_size: int, pool_size: int) -> int | None:
    """A shard's part of a rollout budget, in proportion to its problems; rounded down, so the
    shards together never spend more than the whole budget."""
    if total_budget is None or pool_size == 0:
        return total_budget
    return total_budget * shard_size // pool_size


def merge_allocations(allocations: list[pd.DataFrame], problem_ids: Sequence[str] | pa.Array | pa.ChunkedArray) -> pd.DataFrame:
    """The shards' allocation tables as one, in the pool's order (found by binary search in the
    ids' fixed-width bytes, not a hash table of a million strings)."""
    merged = pd.concat(allocations, ignore_index=True)
    where = IdIndex(merged["problem_id"].to_numpy()).lookup(problem_ids)
    if (missing := where < 0).any():
        ids = problem_ids if isinstance(problem_ids, (pa.Array, pa.ChunkedArray)) else pa.array(problem_ids, pa.string())
        names = ids.filter(pa.array(missing)).to_pylist()
        raise ValueError(f"{len(set(names))} problems have no allocation, e.g. {sorted(set(names))[:3]}")
    columns = ["problem_id", *(c for c in merged.columns if c != "problem_id")]
    return merged.iloc[where][columns].reset_index(drop=True)


def _checked(shards: int) -> int:
    if shards < 1:
        raise ValueError(f"the shard count must be >= 1, got {shards}")
    return shards


@dataclass(frozen=True)
class MergedRollouts:
    """The whole pool's rollouts after its shards ran: a handle on the store, and what the store
    holds against what was allocated, counted in one bounded scan."""

    handle: DatasetHandle
    allocation: pd.DataFrame
    """`merge_allocations`: trials and stop reason per problem, in pool order."""
    short: int
    """Problems whose stored rollouts are not exactly their allocation (0 when all is well)."""
    finish_reasons: dict[str, int]
    sample: pd.DataFrame
    """The first few stored rollouts (`SAMPLE_COLUMNS`)."""
    shards: pd.DataFrame
    """The shards' generation stats, by shard."""

    @property
    def generated(self) -> int:
        return int(self.shards["generated"].sum())

    @property
    def tokens(self) -> int:
        return int(self.shards["tokens"].sum())

    @property
    def tokens_per_second(self) -> float:
        """Generated tokens per second of generation, per engine (0 when all came from the cache)."""
        return self.tokens / float(self.shards["generate_seconds"].sum()) if self.generated else 0.0


SAMPLE_COLUMNS = ["problem_id", "sample_index", "num_tokens", "finish_reason", "text"]


def merged_rollouts(store: RolloutStore, problem_ids: Sequence[str] | pa.Array | pa.ChunkedArray,
                    allocations: list[pd.DataFrame],
                 stats: list[pd.DataFrame], selection_path: Path) -> MergedRollouts:
    """Join the shards' allocations and stats, write the pool's selection (each problem's sample
    indices below its allocation, the same whatever the shard count) to `selection_path`, and
    count what the store holds for it. The store is scanned once, in bounded batches; its rows are
    never loaded whole."""
    alloc = merge_allocations(allocations, problem_ids)
    trials = alloc["trials"].to_numpy(np.int64)
    selection = pa.table({"problem_id": pa.array(alloc["problem_id"].tolist(), pa.string()),
                          "trials": pa.array(trials, pa.int64())})
    write_parquet_checksummed(selection, selection_path)
    per_problem = np.zeros(len(trials), np.int64)
    finish_reasons: Counter[str] = Counter()
    for batch in store.scan(selection.column("problem_id"), trials, columns=["finish_reason"]):
        per_problem += np.bincount(batch.column("position").to_numpy(), minlength=len(trials))
        counts = batch.column("finish_reason").value_counts()
        finish_reasons.update(dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist())))
    handle = DatasetHandle("rollouts", str(store.root), int(per_problem.sum()),
                           f"{store.model.key}/{store.sampling.key}", str(selection_path))
    head = store.scan(selection.column("problem_id"), trials, batch_rows=5, columns=SAMPLE_COLUMNS)
    first = next(head, None)
    head.close()  # releases the store's read lock
    return MergedRollouts(
        handle=handle,
        allocation=alloc,
        short=int((per_problem != trials).sum()),
        finish_reasons=dict(finish_reasons),
        sample=first.to_pandas() if first is not None else pd.DataFrame(columns=SAMPLE_COLUMNS),
        shards=pd.concat(stats, ignore_index=True).sort_values("shard", ignore_index=True),
    )
