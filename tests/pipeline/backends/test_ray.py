"""The Ray backend on a real local cluster (head + worker node) with the real SmolLM2: the same
rollouts, rewards and pass rates as the local backend for the same seeds, and a killed engine actor
costs nothing (every (problem, sample index) stored and labelled exactly once)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from pipeline.backends.ray import (
    BackendSpec,
    RayEngine,
    count_passes_on_ray,
    score_dataset_on_ray,
    shared_store_root,
)
from pipeline.core.records import Problem
from pipeline.difficulty.strata import Strata
from pipeline.engines.base import SamplingConfig
from pipeline.engines.factory import start_engine
from pipeline.engines.options import TransformersOptions
from pipeline.ingest.sources import ReasoningGymSource, normalise, reasoning_gym_rows
from pipeline.labels.pass_rates import LabelTarget, pass_rates
from pipeline.rollouts.allocation import AllocationConfig
from pipeline.rollouts.handles import DatasetHandle
from pipeline.rollouts.sampling import SamplingReport, sample_rollouts
from pipeline.rollouts.sharding import merged_rollouts
from pipeline.rollouts.store import RolloutStore
from pipeline.verify.scoring import GOLD_COLUMNS, score_rollouts
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


def handle(store: RolloutStore, report: SamplingReport, folder: Path) -> DatasetHandle:
    """The rollouts a report allocated, as the handle `rewards` gets from `merge_shards`."""
    ids = report.allocation["problem_id"].tolist()
    return merged_rollouts(store, ids, [report.allocation], [pd.DataFrame({"shard": [0]})],
                           folder / "selection.parquet").handle


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
        scored, summary = score_dataset_on_ray(spec, pa.Table.from_pandas(pool[GOLD_COLUMNS]),
                                               handle(ray_store, remote, tmp_path), VerifierSpec(),
                                               tmp_path / "rewards", log=seen.append)
        stats = engine.last
    finally:
        engine.close()
    ray_rewards = scored.to_frame()

    assert remote.generated == local.generated == 2 * len(pool)
    pd.testing.assert_frame_equal(remote_rollouts[ROLLOUT_COLUMNS], local_rollouts[ROLLOUT_COLUMNS])
    pd.testing.assert_frame_equal(ray_rewards, local_rewards)
    target = LabelTarget(smollm2, SAMPLING, VERIFIER_VERSION)
    columns = ["problem_id", "successes", "trials", "pass_rate"]
    pd.testing.assert_frame_equal(pass_rates(ray_rewards, target)[columns], pass_rates(local_rewards, target)[columns])
    assert local_rewards["passed"].any(), "an easy pool should give the model some passes"
    # the tasks wrote one reward part per verify_chunk rollouts; the driver got their summary
    assert len(scored.parts()) == -(-len(remote_rollouts) // spec.verify_chunk) and scored.rows == len(ray_rewards)
    assert summary.rows == len(ray_rewards) and summary.passed == int(ray_rewards["passed"].sum())
    assert f"{len(remote_rollouts)}/{len(remote_rollouts)} answers (100%)" in seen[-1]
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
    spec = BackendSpec(kind="ray", ray_address=ray_cluster.address, actors=1, verify_chunk=5)
    engine = RayEngine(spec, ENGINE, ray_store)
    counted = []

    def count_passes(start: np.ndarray, upto: np.ndarray) -> np.ndarray:
        counted.append(int((upto - start).sum()))
        return count_passes_on_ray(spec, ray_store, problems, upto, start, VerifierSpec(workers=1))

    try:
        # no scorer on the driver: every round's passes are counted by Ray tasks reading the store
        remote = sample_rollouts(problems, ray_store, lambda: engine, adaptive, Strata(), count_passes=count_passes)
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
    # each round's new rollouts were counted on the cluster, every stored rollout once
    assert len(counted) == remote.rounds and sum(counted) == len(remote_rollouts)
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


def test_an_actors_children_die_with_it_however_it_dies(tmp_path):
    # A stand-in for an engine actor: it starts a child (vLLM's engine core), then the watcher.
    script = ("import subprocess, sys, time\n"
              "from pipeline.backends.ray import die_with_this_process\n"
              "child = subprocess.Popen(['sleep', '300'])\n"
              "die_with_this_process()\n"
              "print(child.pid, flush=True)\n"
              "time.sleep(300)\n")
    actor = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[3])})
    child = int(actor.stdout.readline())
    assert Path(f"/proc/{child}").exists()
    os.kill(actor.pid, signal.SIGKILL)  # no cleanup runs in the actor
    actor.wait(10)
    deadline = time.monotonic() + 20
    while Path(f"/proc/{child}").exists() and "Z" not in _state(child) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not Path(f"/proc/{child}").exists() or "Z" in _state(child), "the child outlived its killed parent"


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""
