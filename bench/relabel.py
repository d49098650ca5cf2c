"""Nightly relabel vs full labelling run: what it costs when 1% of the pool is new.

    .venv/bin/python bench/relabel.py [--problems 300] [--new 3] [--n 2] [--max-tokens 8]

Real model, real engine, real verifier: SmolLM2-135M-Instruct through the transformers engine
(vLLM's ~45 s start would dominate runs this small), on reasoning-gym problems.

1. Full run: an empty rollout store; label `--problems` problems end to end.
2. Nightly relabel: the same store, and the pool plus `--new` problems never seen before (1% by
   default). `pipeline.labels.history` confirms that exactly those need labels.

Each run is what `relabel_job` does, timed phase by phase: `sample_rollouts` (the engine starts
only if something must be generated, and its start counts), `score_rollouts` (every rollout of the
pool is re-verified, as the `rewards` asset does), `pass_rates` and `build_curriculum`. Two fixed
costs are paid before both runs and reported apart: the verifier pool's start (its fork server
preloads sympy) and a first engine start, which imports torch and transformers and reads the
weights into the page cache, where a nightly run finds them too. `cost_ratio` is relabel wall time
over full-run wall time; `rollout_ratio` compares the rollouts generated.

Prints a table, then one JSON object of the figures on its last line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from pipeline.core.model import ModelSpec, embedded_model
from pipeline.core.records import Problem
from pipeline.curriculum.build import CurriculumSpec, build_curriculum
from pipeline.difficulty.strata import Strata
from pipeline.engines import Engine, SamplingConfig, create_engine
from pipeline.ingest.sources import ReasoningGymSource, load_problems
from pipeline.labels.history import stale_or_new
from pipeline.labels.pass_rates import LabelTarget, pass_rates
from pipeline.rollouts.allocation import AllocationConfig
from pipeline.rollouts.sampling import sample_rollouts
from pipeline.rollouts.store import RolloutStore
from pipeline.verify.scoring import score_rollouts
from pipeline.verify.verification import VERIFIER_VERSION, VerifierPool

GENERATORS = ("basic_arithmetic", "chain_sum", "leg_counting")
LEVELS = (0, 1, 2)
PHASES = ("engine_start", "sample", "load", "score", "pass_rates", "curriculum")


def problem_pool(size: int, pool: VerifierPool) -> pd.DataFrame:
    """`size` distinct reasoning-gym problems, interleaved over generators and levels."""
    per_level = -(-size // (len(GENERATORS) * len(LEVELS))) + 2  # a little spare for duplicates
    loaded = load_problems([ReasoningGymSource(g, LEVELS, per_level) for g in GENERATORS], pool=pool)
    frame = Problem.to_frame(loaded.problems)
    # Round-robin over categories, so any prefix (and the tail added later) mixes difficulties.
    frame["turn"] = frame.groupby("category").cumcount()
    frame = frame.sort_values(["turn", "category"], kind="stable").drop(columns="turn")
    if len(frame) < size:
        raise RuntimeError(f"only {len(frame)} distinct problems for {size} wanted")
    return frame.head(size).reset_index(drop=True)


class TimedEngine:
    """Starts the engine on first use, timing the start; `close` shuts it down."""

    def __init__(self, model: ModelSpec, threads: int) -> None:
        self.model = model
        self.threads = threads
        self.engine: Engine | None = None
        self.start_s = 0.0

    def __call__(self) -> Engine:
        if self.engine is None:
            started = time.perf_counter()
            self.engine = create_engine("transformers", self.model, threads=self.threads)
            self.start_s = time.perf_counter() - started
        return self.engine

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None


def label_run(problems: pd.DataFrame, home: Path, target: LabelTarget, n: int, threads: int,
              pool: VerifierPool, name: str) -> tuple[dict, pd.DataFrame]:
    """One labelling run over `problems`; returns its phase timings and counts, and the labels."""
    store = RolloutStore(home, target.model, target.sampling, engine="transformers")
    engine = TimedEngine(target.model, threads)
    seconds: dict[str, float] = {}

    def timed(phase: str, work: Callable[[], object]):
        started = time.perf_counter()
        result = work()
        seconds[phase] = time.perf_counter() - started
        return result

    try:
        report = timed("sample", lambda: sample_rollouts(
            problems, store, engine, AllocationConfig(policy="uniform", samples_per_problem=n), Strata()))
    finally:
        engine.close()
    seconds["sample"] -= engine.start_s
    seconds["engine_start"] = engine.start_s
    rollouts = timed("load", lambda: store.load(problems["problem_id"].tolist(), n))
    rewards = timed("score", lambda: score_rollouts(problems, rollouts, pool))
    labels = timed("pass_rates", lambda: pass_rates(rewards, target))
    manifest = timed("curriculum", lambda: build_curriculum(problems, labels, CurriculumSpec(name), home))
    figures = {
        "problems": len(problems),
        "rollouts": len(rollouts),
        "generated": report.generated,
        "tokens": report.tokens,
        "verified": int((rewards["status"] != "no_answer").sum()),  # the rest had no answer to check
        "in_stages": manifest["counts"]["in_stages"],
        "wall_s": sum(seconds.values()),
        **{f"{phase}_s": seconds[phase] for phase in PHASES},
    }
    return figures, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=300, help="pool of the full run")
    parser.add_argument("--new", type=int, default=3, help="problems added before the relabel")
    parser.add_argument("--n", type=int, default=2, help="rollouts per problem")
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; on a shared 2-core machine one thread is several times faster")
    args = parser.parse_args()

    model = embedded_model()  # converted once into .gradus/models, reused by later runs
    sampling = SamplingConfig(max_tokens=args.max_tokens)
    target = LabelTarget(model, sampling, VERIFIER_VERSION)
    started = time.perf_counter()
    warm = TimedEngine(model, args.threads)
    warm()  # imports torch and transformers, and reads the weights once: each run then starts alike
    warm.close()
    warmup_s = time.perf_counter() - started
    started = time.perf_counter()
    with VerifierPool(workers=1) as pool, tempfile.TemporaryDirectory(prefix="gradus-relabel-") as tmp:
        pool_start_s = time.perf_counter() - started
        everything = problem_pool(args.problems + args.new, pool)
        old, nightly = everything.head(args.problems), everything
        home = Path(tmp)

        full, full_labels = label_run(old, home, target, args.n, args.threads, pool, "full")
        due = stale_or_new(nightly, full_labels, target)
        relabel, relabel_labels = label_run(nightly, home, target, args.n, args.threads, pool, "nightly")

    new_ids = set(nightly["problem_id"]) - set(old["problem_id"])
    assert set(due) == new_ids, "staleness should flag exactly the new problems"
    counts = ["problem_id", "successes", "trials"]
    kept = relabel_labels[relabel_labels["problem_id"].isin(old["problem_id"])][counts].reset_index(drop=True)
    unchanged = kept.equals(full_labels[counts].reset_index(drop=True))

    print(f"model {model.model_id}@{model.revision}, transformers engine, n={args.n}, "
          f"max_tokens={args.max_tokens}, {args.threads} torch thread(s); outside both runs: engine warm-up "
          f"{warmup_s:.1f} s, verifier pool start {pool_start_s:.1f} s")
    print(f"{'run':<9}{'problems':>9}{'generated':>10}{'tokens':>8}{'wall s':>8}"
          + "".join(f"{p + ' s':>14}" for p in PHASES))
    for label, r in (("full", full), ("relabel", relabel)):
        print(f"{label:<9}{r['problems']:>9}{r['generated']:>10}{r['tokens']:>8}{r['wall_s']:>8.2f}"
              + "".join(f"{r[p + '_s']:>14.2f}" for p in PHASES))
    cost_ratio = relabel["wall_s"] / full["wall_s"]
    print(f"due for labels: {len(due)} of {len(nightly)} ({len(due) / len(nightly):.1%}); "
          f"cost ratio {cost_ratio:.1%}; labels of unchanged problems identical: {unchanged}")
    figures = {
        "cost_ratio": round(cost_ratio, 4),
        "rollout_ratio": round(relabel["generated"] / full["generated"], 4),
        "token_ratio": round(relabel["tokens"] / full["tokens"], 4),
        "cost_ratio_without_engine_start": round(
            (relabel["wall_s"] - relabel["engine_start_s"]) / (full["wall_s"] - full["engine_start_s"]), 4),
        "due_fraction": round(len(due) / len(nightly), 4),
        "unchanged_labels_identical": unchanged,
        "goal_cost_ratio": 0.03,
        "verifier_pool_start_s": round(pool_start_s, 2),
        "engine_warmup_s": round(warmup_s, 2),
        "threads": args.threads,
        "n": args.n,
        "max_tokens": args.max_tokens,
        "full": {k: round(v, 3) if isinstance(v, float) else v for k, v in full.items()},
        "relabel": {k: round(v, 3) if isinstance(v, float) else v for k, v in relabel.items()},
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
