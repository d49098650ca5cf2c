"""Orchestration of rollout rounds over the store: what gets generated, and when the engine starts.

The engine here is a scripted stand-in (answers right for a fixed set of problems) so that the
counts are exact; the real engines are exercised in tests/assets/test_end_to_end.py.
"""

import numpy as np
import pandas as pd
import pytest

from pipeline.core.model import ModelSpec
from pipeline.difficulty.strata import Strata
from pipeline.engines.base import Completion, Engine, SamplingConfig
from pipeline.rollouts import sampling
from pipeline.rollouts.allocation import AllocationConfig
from pipeline.rollouts.sampling import sample_rollouts
from pipeline.rollouts.store import RolloutStore, read_rows

MODEL = ModelSpec("/nowhere", "org/scripted", "r1")


class ScriptedEngine(Engine):
    """Completes every request of a problem in `solvable` with "right", else "wrong"."""

    name = "scripted"

    def __init__(self, solvable: set[str]) -> None:
        super().__init__(MODEL)
        self.solvable = solvable
        self.requests = 0

    def _generate_batch(self, requests, sampling):
        self.requests += len(requests)
        return [Completion("right" if r.problem_id in self.solvable else "wrong", 1, "stop") for r in requests]


def problems(n: int) -> pd.DataFrame:
    ids = [f"p{i:03d}" for i in range(n)]
    return pd.DataFrame({"problem_id": ids, "prompt": [[{"role": "user", "content": i}] for i in ids]})


def scorer(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"problem_id": frame["problem_id"], "passed": frame["text"] == "right"})


def test_uniform_generates_once_and_then_only_for_new_problems(tmp_path):
    store = RolloutStore(tmp_path, MODEL, SamplingConfig())
    engine = ScriptedEngine(set())
    config = AllocationConfig(policy="uniform", samples_per_problem=3)
    first = sample_rollouts(problems(4), store, lambda: engine, config, Strata())
    assert first.generated == 12 and engine.requests == 12 and first.rows == 12

    started = []
    again = sample_rollouts(problems(4), store, lambda: started.append(1) or engine, config, Strata())
    assert again.generated == 0 and started == [] and again.rows == 12

    more = sample_rollouts(problems(6), store, lambda: engine, config, Strata())
    assert more.generated == 6 and engine.requests == 18
    assert (more.allocation["trials"] == 3).all()


def test_adaptive_stops_settled_problems_early_and_respects_caps(tmp_path):
    store = RolloutStore(tmp_path, MODEL, SamplingConfig())
    pool = problems(60)
    engine = ScriptedEngine(set(pool["problem_id"][:30]))
    config = AllocationConfig(policy="adaptive", min_samples=4, max_samples=16, batch_per_problem=4)
    report = sample_rollouts(pool, store, lambda: engine, config, Strata(), scorer)
    alloc = report.allocation
    assert alloc["trials"].between(4, 16).all()
    assert report.generated == alloc["trials"].sum() == report.rows
    assert report.generated < 16 * len(pool)
    assert set(alloc["stop_reason"]) <= {"settled", "max_samples"}
    # Every answer is all-right or all-wrong, so the successes seen match the script.
    solvable = alloc["problem_id"].isin(engine.solvable)
    assert (alloc["successes"][solvable] == alloc["trials"][solvable]).all()
    assert (alloc["successes"][~solvable] == 0).all()

    again = sample_rollouts(pool, store, lambda: pytest.fail("nothing should be generated"), config, Strata(), scorer)
    pd.testing.assert_frame_equal(again.allocation, alloc)


def test_passes_counted_where_the_store_is_read_allocate_as_the_scorer_does(tmp_path):
    pool = problems(60)
    solvable = set(pool["problem_id"][:30])
    config = AllocationConfig(policy="adaptive", min_samples=4, max_samples=16, batch_per_problem=4)
    by_scorer = sample_rollouts(pool, RolloutStore(tmp_path / "a", MODEL, SamplingConfig()),
                                lambda: ScriptedEngine(solvable), config, Strata(), scorer)
    store = RolloutStore(tmp_path / "b", MODEL, SamplingConfig())
    windows = []

    def count_passes(start, upto):
        """What the Ray backend's tasks do: read the rows `locate` names, return passes per problem."""
        windows.append(int((upto - start).sum()))
        passes = np.zeros(len(pool), np.int64)
        for part, rows, positions in store.locate(pool["problem_id"].tolist(), upto, start):
            texts = np.array(read_rows(part, rows, ["text"]).column("text").to_pylist())
            np.add.at(passes, positions, texts == "right")
        return passes

    counted = sample_rollouts(pool, store, lambda: ScriptedEngine(solvable), config, Strata(),
                              count_passes=count_passes)
    pd.testing.assert_frame_equal(counted.allocation, by_scorer.allocation)
    assert len(windows) == counted.rounds and sum(windows) == counted.rows


def test_total_budget_is_never_exceeded(tmp_path):
    store = RolloutStore(tmp_path, MODEL, SamplingConfig())
    config = AllocationConfig(policy="adaptive", min_samples=2, max_samples=32, batch_per_problem=2, total_budget=50)
    report = sample_rollouts(problems(10), store, lambda: ScriptedEngine(set()), config, Strata(), scorer)
    assert report.allocation["trials"].sum() <= 50


def test_adaptive_needs_a_scorer(tmp_path):
    store = RolloutStore(tmp_path, MODEL, SamplingConfig())
    with pytest.raises(ValueError, match="scorer"):
        sample_rollouts(problems(2), store, lambda: ScriptedEngine(set()), AllocationConfig(policy="adaptive"), Strata())


def test_a_store_past_the_part_threshold_is_compacted_after_sampling(tmp_path, monkeypatch):
    monkeypatch.setattr(sampling, "COMPACT_PARTS", 3)
    store = RolloutStore(tmp_path, MODEL, SamplingConfig())
    for n in range(1, 5):  # one part per call: each call adds one problem
        sample_rollouts(problems(n), store, lambda: ScriptedEngine(set()),
                        AllocationConfig(policy="uniform", samples_per_problem=2), Strata())
    assert len(store.parts()) < 4
    assert len(store.load(problems(4)["problem_id"])) == 8


@pytest.mark.parametrize("config", [AllocationConfig(policy="uniform", samples_per_problem=4),
                                    AllocationConfig(policy="adaptive", min_samples=1, max_samples=8)])
def test_greedy_sampling_of_several_samples_per_problem_is_refused(tmp_path, config):
    """At temperature 0 every sample of a problem is the same completion: 4/4 would be one trial counted 4 times."""
    store = RolloutStore(tmp_path, MODEL, SamplingConfig(temperature=0.0))
    started = []
    with pytest.raises(ValueError, match="temperature 0.*same completion"):
        sample_rollouts(problems(2), store, lambda: started.append(1) or ScriptedEngine(set()), config, Strata(), scorer)
    assert started == []
    greedy = sample_rollouts(problems(2), store, lambda: ScriptedEngine(set()),
                             AllocationConfig(policy="uniform", samples_per_problem=1), Strata())
    assert greedy.rows == 2  # one greedy trial per problem is what temperature 0 measures
