"""The Ray backend on a real local cluster (head + worker node) with the real SmolLM2: the same
rollouts, rewards and pass rates as the local backend for the same seeds, and a killed engine actor
costs nothing (every (problem, sample index) stored and labelled exactly once)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from pipeline.backends.ray import BackendSpec, RayEngine, score_on_ray, shared_store_root
from pipeline.core.records import Problem
from pipeline.difficulty.strata import Strata
from pipeline.engines.base import SamplingConfig
from pipeline.engines.factory import start_engine
from pipeline.engines.options import TransformersOptions
from pipeline.ingest.sources import ReasoningGymSource, normalise, reasoning_gym_rows
from pipeline.labels.pass_rates import LabelTarget, pass_rates
from pipeline.rollouts.allocation import AllocationConfig
from pipeline.rollouts.sampling import sample_rollouts
from pipeline.rollouts.store import RolloutStore
from pipeline.verify.scoring import score_rollouts
from pipeline.verify.verification import VERIFIER_VERSION, VerifierSpec

SAMPLING = SamplingConfig(max_tokens=24, seed=3)
# One torch thread on both sides: a matmul's summation order depends on the thread count, and a
# last-bit difference in a logit can change a sampled token.
ENGINE = TransformersOptions(batch_size=4, threads=1)
ROLLOUT_COLUMNS = ["problem_id", "sample_index", "text", "num_tokens", "finish_reason"]


@pytest.fixture(scope="module")
def pool() -> pd.DataFrame:
    rows = reasoning_gym_rows(ReasoningGymSource("basic_arithmetic", levels=(0,), size_per_level=8))
    return Problem.to_frame(normalise(rows).problems)


@pytest.fixture
def restore_torch_threads():
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def uniform(n: int) -> AllocationConfig:
    return AllocationConfig(policy="uniform", samples_per_problem=n)


def test_ray_backend_labels_like_the_local_backend(ray_cluster, smollm2, pool, verifier_pool, tmp_path,
                                                   restore_torch_threads):
    local_store = RolloutStore(tmp_path / "local", smollm2, SAMPLING, engine=ENGINE.kind)
    local = sample_rollouts(pool, local_store, lambda: start_engine(ENGINE, smollm2), uniform(2), Strata())
    local_rollouts = local_store.load_allocated(local.allocation)
    local_rewards = score_rollouts(pool, local_rollouts, verifier_pool)

    spec = BackendSpec(kind="ray", ray_address=ray_cluster.address, verify_chunk=8)
    ray_store = RolloutStore(tmp_path / "ray", smollm2, SAMPLING, engine=ENGINE.kind)
    engine = RayEngine(spec, ENGINE, ray_store)
    try:
        remote = sample_rollouts(pool, ray_store, lambda: engine, uniform(2), Strata())
        remote_rollouts = ray_store.load_allocated(remote.allocation)
        seen = []
        ray_rewards = score_on_ray(spec, pool, remote_rollouts, VerifierSpec(), progress=lambda d, t: seen.append(d))
        stats = engine.last
    finally:
        engine.close()

    assert remote.generated == local.generated == 2 * len(pool)
    pd.testing.assert_frame_equal(remote_rollouts[ROLLOUT_COLUMNS], local_rollouts[ROLLOUT_COLUMNS])
    pd.testing.assert_frame_equal(ray_rewards, local_rewards)
    target = LabelTarget(smollm2, SAMPLING, VERIFIER_VERSION)
    columns = ["problem_id", "successes", "trials", "pass_rate"]
    pd.testing.assert_frame_equal(pass_rates(ray_rewards, target)[columns], pass_rates(local_rewards, target)[columns])
    assert local_rewards["passed"].any(), "an easy pool should give the model some passes"
    assert seen[-1] == len(remote_rollouts)
    # the work ran on the cluster: both nodes, one engine actor each, all batches stored by them
    assert stats.cluster.nodes == 2 and stats.actors == 2 and stats.rows == remote.generated
    assert len(engine.engines_started) == 2
    assert stats.tokens == int(remote_rollouts["num_tokens"].sum()) and stats.tokens_per_second > 0
    assert len(ray_store.parts()) == -(-remote.generated // ENGINE.batch_size)


def test_the_adaptive_policy_on_ray_labels_like_locally_with_one_engine_start(
        ray_cluster, smollm2, pool, verifier_pool, tmp_path, restore_torch_threads):
    problems = pool.iloc[:8].reset_index(drop=True)
    adaptive = AllocationConfig(policy="adaptive", min_samples=2, max_samples=6, batch_per_problem=2)

    def scorer(frame: pd.DataFrame) -> pd.DataFrame:
        return score_rollouts(problems, frame, verifier_pool)

    local_store = RolloutStore(tmp_path / "local", smollm2, SAMPLING, engine=ENGINE.kind)
    with start_engine(ENGINE, smollm2) as local_engine:
        local = sample_rollouts(problems, local_store, lambda: local_engine, adaptive, Strata(), scorer)
    ray_store = RolloutStore(tmp_path / "ray", smollm2, SAMPLING, engine=ENGINE.kind)
    engine = RayEngine(BackendSpec(kind="ray", ray_address=ray_cluster.address, actors=1), ENGINE, ray_store)
    try:
        remote = sample_rollouts(problems, ray_store, lambda: engine, adaptive, Strata(), scorer)
    finally:
        engine.close()

    assert local.rounds >= 2 and remote.rounds == local.rounds
    pd.testing.assert_frame_equal(remote.allocation, local.allocation)
    local_rollouts = local_store.load_allocated(local.allocation)
    remote_rollouts = ray_store.load_allocated(remote.allocation)
    pd.testing.assert_frame_equal(remote_rollouts[ROLLOUT_COLUMNS], local_rollouts[ROLLOUT_COLUMNS])
    target = LabelTarget(smollm2, SAMPLING, VERIFIER_VERSION)
    columns = ["problem_id", "successes", "trials", "pass_rate"]
    pd.testing.assert_frame_equal(pass_rates(scorer(remote_rollouts), target)[columns],
                                  pass_rates(scorer(local_rollouts), target)[columns])
    # one engine served every round (a pool per round would show one actor process per round)
    assert len(engine.engines_started) == 1
    # the driver got counts that match what the actors stored
    assert remote.generated == local.generated == len(remote_rollouts)
    assert remote.tokens == local.tokens == int(remote_rollouts["num_tokens"].sum())
    assert remote.truncated == local.truncated == int((remote_rollouts["finish_reason"] == "length").sum())


def test_the_ray_engine_hands_back_no_completions(ray_cluster, smollm2, tmp_path):
    store = RolloutStore(tmp_path / "ray", smollm2, SAMPLING, engine=ENGINE.kind)
    engine = RayEngine(BackendSpec(kind="ray", ray_address=ray_cluster.address, actors=1), ENGINE, store)
    try:
        with pytest.raises(NotImplementedError, match="generate_stored"):
            engine.generate([], SAMPLING)
    finally:
        engine.close()


def engine_actor_pids(cluster) -> list[int]:
    """Ray Data's engine actors living under this cluster's raylets."""
    raylets = {pid for node in cluster.nodes for pid in node.raylet_pids()}
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if "_EngineActor" in cmdline and ppid in raylets:
            pids.append(int(entry.name))
    return pids


def test_a_killed_engine_actor_loses_and_duplicates_nothing(ray_cluster, smollm2, pool, verifier_pool, tmp_path,
                                                            restore_torch_threads):
    store = RolloutStore(tmp_path / "ray", smollm2, SAMPLING, engine=ENGINE.kind)
    options = TransformersOptions(batch_size=2, threads=1)
    engine = RayEngine(BackendSpec(kind="ray", ray_address=ray_cluster.address, actors=1), options, store)
    chunks = -(-2 * len(pool) // options.batch_size)
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["report"] = sample_rollouts(pool, store, lambda: engine, uniform(2), Strata())
        except BaseException as exc:  # handed to the test thread
            outcome["error"] = exc

    driver = threading.Thread(target=run)
    driver.start()
    try:
        deadline = time.monotonic() + 180
        while not store.parts() and time.monotonic() < deadline and driver.is_alive():
            time.sleep(0.2)
        victims = engine_actor_pids(ray_cluster)
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        parts_at_kill = len(store.parts())
        assert victims and 0 < parts_at_kill < chunks, f"{victims} killed after {parts_at_kill}/{chunks} parts"
        driver.join(240)
        assert not driver.is_alive(), "the run did not finish after its actor was killed"
    finally:
        driver.join(60)
        stats = engine.last
        engine.close()
    if "error" in outcome:
        raise outcome["error"]
    report = outcome["report"]

    rollouts = store.load_allocated(report.allocation)
    keys = rollouts[["problem_id", "sample_index"]]
    expected = {(p, i) for p in pool["problem_id"] for i in range(2)}
    assert len(keys) == len(expected) and set(map(tuple, keys.to_numpy().tolist())) == expected
    assert not keys.duplicated().any()
    # the killed actor is gone, and the work went on after it: a replacement stored the rest
    assert not set(victims) & set(engine_actor_pids(ray_cluster))
    assert stats.rows == len(expected) and len(store.parts()) > parts_at_kill
    labels = pass_rates(score_rollouts(pool, rollouts, verifier_pool),
                        LabelTarget(smollm2, SAMPLING, VERIFIER_VERSION))
    assert sorted(labels["problem_id"]) == sorted(pool["problem_id"]) and (labels["trials"] == 2).all()
    # a rerun finds everything stored and generates nothing
    again = sample_rollouts(pool, store, lambda: pytest.fail("nothing is missing"), uniform(2), Strata())
    assert again.generated == 0 and again.rows == len(expected)


def test_a_url_store_is_refused_with_the_fix(tmp_path, smollm2):
    store = RolloutStore(tmp_path, smollm2, SAMPLING)
    store.home = "s3://bucket/gradus"
    with pytest.raises(ValueError, match="filesystem path only"):
        shared_store_root(store)


def test_the_backend_spec_refuses_unknown_names():
    with pytest.raises(ValueError, match="GRADUS_BACKEND"):
        BackendSpec(kind="slurm")
