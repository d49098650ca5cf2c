"""The same small labelling job on the local backend and on a local Ray cluster (a head node and
one worker node, started here): are the labels equal, and what does Ray cost in throughput?

Each side generates its rollouts into its own empty store with the same engine kind and seeds,
scores them (locally with a verifier pool, on Ray with verification tasks) and aggregates pass
rates. Throughput is generated tokens per second without engine start-up on both sides: locally
from the generate call after the engine started, on Ray from the first engine actor ready to the
last span back. Ray's start-up (joining, actor start, the engine's load) is reported apart. The Ray
driver runs in a process of its own, once at `--problems` and once at 4x as many, for its peak RSS
(the driver holds counts, not completions, so it should barely grow).

    .venv/bin/python bench/ray_overhead.py [--problems 24] [--n 4] [--max-tokens 48] [--engine vllm]

Prints a table, then one JSON object of the figures on its last line.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
import pyarrow as pa

from pipeline.backends.ray import BackendSpec, RayEngine, score_dataset_on_ray
from pipeline.backends.ray_cluster import local_cluster
from pipeline.core.model import embedded_model
from pipeline.core.records import Problem
from pipeline.difficulty.strata import Strata
from pipeline.engines.base import SamplingConfig
from pipeline.engines.factory import engine_options, start_engine
from pipeline.ingest.sources import ReasoningGymSource, normalise, reasoning_gym_rows
from pipeline.labels.pass_rates import LabelTarget, pass_rates
from pipeline.rollouts.allocation import AllocationConfig
from pipeline.rollouts.sampling import sample_rollouts
from pipeline.rollouts.sharding import merged_rollouts
from pipeline.rollouts.store import RolloutStore
from pipeline.verify.scoring import GOLD_COLUMNS, score_rollouts
from pipeline.verify.verification import VERIFIER_VERSION, VerifierSpec

ROLLOUT_COLUMNS = ["problem_id", "sample_index", "text", "num_tokens", "finish_reason"]
LABEL_COLUMNS = ["problem_id", "successes", "trials", "pass_rate"]


def pool(size: int) -> pd.DataFrame:
    per_level = max(-(-size // 4), 1)
    rows = [r for g in ("basic_arithmetic", "chain_sum")
            for r in reasoning_gym_rows(ReasoningGymSource(g, levels=(0, 1), size_per_level=per_level))]
    return Problem.to_frame(normalise(rows).problems[:size])


def local_run(problems, model, sampling, options, allocation, home: Path) -> dict:
    store = RolloutStore(home, model, sampling, engine=options.kind)
    append, storing = store.append, [0.0]

    def timed_append(*args):
        at = time.perf_counter()
        append(*args)
        storing[0] += time.perf_counter() - at

    store.append = timed_append  # the local side's share of generation spent writing the store
    started = time.perf_counter()
    engine = start_engine(options, model)
    start_s = time.perf_counter() - started
    load = os.getloadavg()[0]
    try:
        report = sample_rollouts(problems, store, lambda: engine, allocation, Strata(),
                                 log=lambda m: print(f"  local: {m}", flush=True))
    finally:
        engine.close()
    rollouts = store.load_allocated(report.allocation)
    with VerifierSpec().pool() as verifiers:
        rewards = score_rollouts(problems, rollouts, verifiers)
    return {"rollouts": rollouts, "rewards": rewards, "tokens": report.tokens,
            "tok_s": report.tokens_per_second, "start_s": start_s, "wall_s": time.perf_counter() - started,
            "load_avg": (load + os.getloadavg()[0]) / 2, "generate_s": report.generate_seconds,
            "store_s": storing[0]}


def ray_run(problems, model, sampling, options, allocation, home: Path, address: str, cpus: int) -> dict:
    """The Ray side as a driver process of its own (see `driver`), joined to the running cluster."""
    spec = BackendSpec(kind="ray", ray_address=address, actors=1, cpus_per_actor=cpus)
    store = RolloutStore(home, model, sampling, engine=options.kind)
    engine = RayEngine(spec, options, store)
    load = os.getloadavg()[0]
    try:
        t0 = time.perf_counter()
        report = sample_rollouts(problems, store, lambda: engine, allocation, Strata(),
                                 log=lambda m: print(f"  ray: {m}", flush=True))
        stats = engine.last
        handle = merged_rollouts(store, problems["problem_id"].tolist(), [report.allocation],
                                 [pd.DataFrame({"shard": [0]})], home / "selection.parquet").handle
        scored, _ = score_dataset_on_ray(spec, pa.Table.from_pandas(problems[GOLD_COLUMNS]), handle, VerifierSpec(),
                                         home / "rewards")
        wall_s = time.perf_counter() - t0
        # The rollouts and rewards are read back for the comparison only after the driver's peak.
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        rollouts = store.load_allocated(report.allocation)
        rewards = scored.to_frame()
    finally:
        engine.close()
    return {"rollouts": rollouts, "rewards": rewards, "tokens": stats.tokens, "tok_s": stats.tokens_per_second,
            "start_s": stats.engine_start_s, "wall_s": wall_s, "nodes": stats.cluster.nodes,
            "actors": stats.actors_used, "load_avg": (load + os.getloadavg()[0]) / 2,
            "driver_peak_rss_mb": rss_mb, "generate_s": stats.generate_s, "engine_s": stats.engine_s,
            "store_s": stats.store_s, "handoff_s": stats.handoff_s}


def driver(*args) -> dict:
    """`ray_run` in a fresh process, so its peak RSS is the driver's own (not the local engine's)."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1) as one:
        return one.submit(ray_run, *args).result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=24)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--engine", default="vllm", help="vllm or transformers (the same on both sides)")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2,
                        help="CPUs of the Ray worker node and its engine actor (its thread count)")
    args = parser.parse_args()

    model = embedded_model()
    problems = pool(args.problems)
    sampling = SamplingConfig(max_tokens=args.max_tokens, seed=7)
    # transformers: the same thread count on both sides, so matmuls sum in the same order
    options = engine_options(args.engine, **({"threads": args.cpus} if args.engine == "transformers" else {}))
    allocation = AllocationConfig(policy="uniform", samples_per_problem=args.n)
    print(f"{len(problems)} problems x n={args.n}, max_tokens={args.max_tokens}, engine={args.engine}", flush=True)
    large = pool(4 * args.problems)
    with tempfile.TemporaryDirectory(prefix="gradus-ray-bench-") as tmp:
        local = local_run(problems, model, sampling, options, allocation, Path(tmp) / "local")
        started = time.perf_counter()
        with local_cluster(workers=1, head_cpus=0, worker_cpus=args.cpus, object_store_mb=300) as cluster:
            up_s = time.perf_counter() - started
            remote = driver(problems, model, sampling, options, allocation, Path(tmp) / "ray", cluster.address,
                            args.cpus)
            print(f"  ray driver at {4 * len(problems)} problems (peak RSS only)", flush=True)
            bigger = driver(large, model, sampling, options, allocation, Path(tmp) / "ray-large", cluster.address,
                            args.cpus)
            # The drivers killed their actors: any engine process still alive was orphaned by one.
            time.sleep(3)
            orphans = [pid for node in cluster.nodes for pid in node.processes("EngineCore")]

    target = LabelTarget(model, sampling, VERIFIER_VERSION)
    same_rollouts = local["rollouts"][ROLLOUT_COLUMNS].equals(remote["rollouts"][ROLLOUT_COLUMNS])
    same_labels = pass_rates(local["rewards"], target)[LABEL_COLUMNS].equals(
        pass_rates(remote["rewards"], target)[LABEL_COLUMNS])
    print(f"{'backend':<8}{'start s':>9}{'wall s':>9}{'tokens':>9}{'tok/s':>9}{'load':>7}")
    for name, r in (("local", local), ("ray", remote)):
        print(f"{name:<8}{r['start_s']:>9.1f}{r['wall_s']:>9.1f}{r['tokens']:>9}{r['tok_s']:>9.1f}{r['load_avg']:>7.1f}")
    figures = {
        "rows": len(remote["rollouts"]),
        "problems": len(problems), "n": args.n, "max_tokens": args.max_tokens, "engine": args.engine,
        "labels_equal": bool(same_labels),
        "rollouts_equal": bool(same_rollouts),
        "local_tok_s": round(local["tok_s"], 1),
        "ray_tok_s": round(remote["tok_s"], 1),
        "ray_over_local": round(remote["tok_s"] / local["tok_s"], 2) if local["tok_s"] else None,
        "local_engine_start_s": round(local["start_s"], 1),
        "ray_engine_start_s": round(remote["start_s"], 1),
        "ray_cluster_up_s": round(up_s, 1),
        "local_wall_s": round(local["wall_s"], 1),
        "ray_wall_s": round(remote["wall_s"], 1),
        "ray_nodes": remote["nodes"],
        "ray_actor_processes": remote["actors"],
        "orphan_engine_processes": len(orphans),
        "load_avg_local": round(local["load_avg"], 1),
        "load_avg_ray": round(remote["load_avg"], 1),
        "rows_large": len(bigger["rollouts"]),
        "driver_peak_rss_mb_small": round(remote["driver_peak_rss_mb"], 1),
        "driver_peak_rss_mb_large": round(bigger["driver_peak_rss_mb"], 1),
        "driver_rss_growth": round(bigger["driver_peak_rss_mb"] / remote["driver_peak_rss_mb"], 2),
        "ray_tok_s_large": round(bigger["tok_s"], 1),
        # Where Ray's generation time goes (seconds; `other`: the driver between spans, Ray's scheduling
        # not counted in a span's round trip), beside the local side's
        "local_generate_s": round(local["generate_s"], 2),
        "local_store_s": round(local["store_s"], 2),
        "ray_generate_s": round(remote["generate_s"], 2),
        "ray_engine_s": round(remote["engine_s"], 2),
        "ray_store_s": round(remote["store_s"], 2),
        "ray_handoff_s": round(remote["handoff_s"], 2),
        "ray_other_s": round(remote["generate_s"] - remote["engine_s"] - remote["store_s"] - remote["handoff_s"], 2),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
