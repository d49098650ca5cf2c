"""Problem shards: a stable, process-independent split that covers the pool exactly once."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipeline.rollouts.sharding import (
    SHARDS_ENV,
    default_shards,
    merge_allocations,
    shard_budget,
    shard_of,
    split_problems,
)

REPO = Path(__file__).resolve().parents[3]


def pool(n: int) -> pd.DataFrame:
    return pd.DataFrame({"problem_id": [f"id-{i:04d}" for i in range(n)], "answer": [str(i) for i in range(n)]})


def test_split_covers_the_pool_once_in_order_and_is_balanced():
    problems = pool(1000)
    shards = split_problems(problems, 4)
    assert sorted(shards) == [0, 1, 2, 3]
    together = pd.concat(shards.values())
    assert sorted(together["problem_id"]) == sorted(problems["problem_id"])
    for index, shard in shards.items():
        assert shard["problem_id"].map(lambda pid: shard_of(pid, 4)).eq(index).all()
        positions = shard["problem_id"].map(dict(zip(problems["problem_id"], range(len(problems)))))
        assert positions.is_monotonic_increasing
        assert 200 <= len(shard) <= 300
    assert list(split_problems(problems, 1)) == [0]
    pd.testing.assert_frame_equal(split_problems(problems, 1)[0], problems)


def test_growing_the_pool_moves_no_problem_and_empty_shards_are_skipped():
    small, large = split_problems(pool(40), 3), split_problems(pool(400), 3)
    for index, shard in small.items():
        assert set(shard["problem_id"]) <= set(large[index]["problem_id"])
    few = split_problems(pool(2), 16)
    assert sum(len(s) for s in few.values()) == 2 and len(few) <= 2
    assert split_problems(pool(0), 4) == {}


def test_assignment_is_the_same_in_another_process():
    ids = [f"id-{i:04d}" for i in range(50)]
    code = f"from pipeline.rollouts.sharding import shard_of; print([shard_of(p, 7) for p in {ids!r}])"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str([shard_of(p, 7) for p in ids])


def test_budget_shares_never_exceed_the_whole():
    sizes = [5, 3, 9, 1]
    shares = [shard_budget(100, n, sum(sizes)) for n in sizes]
    assert sum(shares) <= 100 and sum(shares) > 100 - len(sizes)
    assert shard_budget(None, 3, 10) is None
    assert shard_budget(50, 10, 10) == 50


def test_allocations_merge_back_into_pool_order():
    ids = ["c", "a", "b"]
    parts = [pd.DataFrame({"problem_id": ["a", "b"], "trials": [1, 2]}),
             pd.DataFrame({"problem_id": ["c"], "trials": [3]})]
    merged = merge_allocations(parts, ids)
    assert merged["problem_id"].tolist() == ids and merged["trials"].tolist() == [3, 1, 2]
    with pytest.raises(ValueError, match="no allocation"):
        merge_allocations(parts[:1], ids)


@pytest.mark.parametrize("raw, expected", [(None, 1), ("", 1), ("3", 3), (" 2 ", 2)])
def test_shard_count_from_the_environment(monkeypatch, raw, expected):
    if raw is None:
        monkeypatch.delenv(SHARDS_ENV, raising=False)
    else:
        monkeypatch.setenv(SHARDS_ENV, raw)
    assert default_shards() == expected


@pytest.mark.parametrize("raw", ["0", "-1", "two"])
def test_a_bad_shard_count_is_refused(monkeypatch, raw):
    monkeypatch.setenv(SHARDS_ENV, raw)
    with pytest.raises(ValueError, match=SHARDS_ENV if raw == "two" else ">= 1"):
        default_shards()
    with pytest.raises(ValueError):
        shard_of("x", 0)
