"""Problem shards: a stable split of the pool so rollouts scale out over parallel workers.

Each shard is sampled by its own worker with its own engine; the shards write to the same rollout
store (its parts never collide) and are merged back in (problem_id, sample_index) order.

A problem's shard is a hash of its id, not its position: every worker computes the same split
without coordination (Python's `hash()` is salted per process, so it cannot be used), and adding
problems to the pool never moves existing ones to another shard.
"""

from __future__ import annotations

import os

import pandas as pd

from pipeline.core.records import content_hash

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


def split_problems(problems: pd.DataFrame, shards: int) -> dict[int, pd.DataFrame]:
    """The non-empty shards of the pool, by shard index, each keeping the pool's row order."""
    index = problems["problem_id"].map(lambda pid: shard_of(pid, shards))
    return {int(i): part.reset_index(drop=True) for i, part in problems.groupby(index, sort=True)}


def shard_budget(total_budget: int | None, shard_size: int, pool_size: int) -> int | None:
    """A shard's part of a rollout budget, in proportion to its problems; rounded down, so the
    shards together never spend more than the whole budget."""
    if total_budget is None or pool_size == 0:
        return total_budget
    return total_budget * shard_size // pool_size


def merge_allocations(allocations: list[pd.DataFrame], problem_ids: list[str]) -> pd.DataFrame:
    """The shards' allocation tables as one, in the pool's order."""
    merged = pd.concat(allocations, ignore_index=True).set_index("problem_id")
    missing = set(problem_ids) - set(merged.index)
    if missing:
        raise ValueError(f"{len(missing)} problems have no allocation, e.g. {sorted(missing)[:3]}")
    return merged.loc[problem_ids].reset_index()


def _checked(shards: int) -> int:
    if shards < 1:
        raise ValueError(f"the shard count must be >= 1, got {shards}")
    return shards
