"""Rollouts needed to label difficulty strata: adaptive allocation vs uniform n, in simulation.

A pool of problems with known pass rates (a mixture: exactly 0, exactly 1, and a U-shaped Beta
spread) is "rolled out" by Bernoulli draws. Each policy's label for a problem is the class the
pipeline assigns from its counts (`Strata.observed_class`: every trial passed → solved, none →
unsolved, else the stage of s / n); accuracy is the fraction of labels equal to the class of the
true pass rate (`Strata.stage_of`). Every policy reads the same pre-drawn outcome stream per
problem (common random numbers), so differences between rows are not sampling noise of the pool.

Two strata are measured: the default (3 stages, solved and unsolved excluded) and the same stage
edges with nothing excluded. They differ in what is hard: telling p == 1 from p = 0.99 takes many
rollouts whatever the policy, and with solved / unsolved as classes that distinction is part of
the label.

Run: .venv/bin/python bench/adaptive_budget.py [--problems N] [--seed S]
Prints a table, then on its last line one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from pipeline.allocation import AllocationConfig, run_allocation
from pipeline.strata import Strata

UNIFORM_NS = (4, 8, 16, 21, 32, 64)
"""Uniform baselines; 21 is a third of 64, the rollouts the adaptive policy is meant to fit in."""
REFERENCE_N = 64
ADAPTIVE = (
    AllocationConfig(),
    AllocationConfig(max_samples=128, confidence=0.9, min_gain=0.0003),
    AllocationConfig(max_samples=128, confidence=0.95, min_gain=0.0008),
    AllocationConfig(max_samples=128, confidence=0.95, min_gain=0.0005),
    AllocationConfig(max_samples=128, confidence=0.99, min_gain=0.0005),
    AllocationConfig(max_samples=128, confidence=0.99, min_gain=0.0003),
)
"""Adaptive settings measured: the defaults, and a grid around them picked in exploratory runs."""


@dataclass(frozen=True)
class PoolMixture:
    """True pass rates of the simulated pool."""

    unsolved: float = 0.35
    """Fraction with p exactly 0."""
    solved: float = 0.15
    """Fraction with p exactly 1."""
    alpha: float = 0.6
    """Beta shape of the rest (both shapes below 1: U-shaped, most mass near 0 and 1)."""
    beta: float = 0.6
    """Beta shape of the rest."""

    def sample(self, n_problems: int, rng: np.random.Generator) -> NDArray[np.float64]:
        u = rng.random(n_problems)
        spread = rng.beta(self.alpha, self.beta, n_problems)
        return np.where(u < self.unsolved, 0.0, np.where(u < self.unsolved + self.solved, 1.0, spread))


class OutcomeStreams:
    """Pre-drawn Bernoulli outcomes per problem; a policy consumes each problem's stream in order."""

    def __init__(self, pass_rates: NDArray[np.float64], max_trials: int, rng: np.random.Generator):
        passed = rng.random((pass_rates.size, max_trials)) < pass_rates[:, None]
        self._cumulative = np.zeros((pass_rates.size, max_trials + 1), dtype=np.int32)
        np.cumsum(passed, axis=1, out=self._cumulative[:, 1:])

    def sampler(self) -> Callable[[NDArray[np.int64]], NDArray[np.int64]]:
        """A fresh `sample_fn` for `run_allocation`, starting every problem at its first outcome."""
        rows = np.arange(self._cumulative.shape[0])
        used = np.zeros(rows.size, dtype=np.int64)

        def sample_fn(extra: NDArray[np.int64]) -> NDArray[np.int64]:
            nonlocal used
            successes = self._cumulative[rows, used + extra] - self._cumulative[rows, used]
            used = used + extra
            return successes

        return sample_fn


def evaluate(
    config: AllocationConfig, truth: NDArray[np.int64], streams: OutcomeStreams, strata: Strata
) -> dict:
    """One policy run over the pool: accuracy against `truth`, rollouts, rounds, wall time."""
    start = time.perf_counter()
    result = run_allocation(streams.sampler(), truth.size, strata, config)
    seconds = time.perf_counter() - start
    labels = strata.observed_class(result.successes, result.trials)
    return {
        "policy": config.policy,
        "setting": _describe(config),
        "accuracy": float(np.mean(labels == truth)),
        "rollouts": result.total_rollouts,
        "per_problem": result.total_rollouts / truth.size,
        "rounds": result.rounds,
        "seconds": seconds,
    }


def _describe(config: AllocationConfig) -> str:
    if config.policy == "uniform":
        return f"n={config.n_uniform}"
    text = (
        f"conf={config.confidence} gain={config.min_gain} "
        f"n={config.min_samples}..{config.max_samples} +{config.batch_per_problem}"
    )
    return text + (f" budget={config.total_budget}" if config.total_budget is not None else "")


def simulate(
    n_problems: int = 10_000,
    seed: int = 0,
    strata: Strata = Strata(),
    mixture: PoolMixture = PoolMixture(),
    adaptive: Sequence[AllocationConfig] = ADAPTIVE,
) -> dict:
    """Accuracy and rollouts of uniform n and of each adaptive setting on one simulated pool.

    Returns `rows` (one per policy run) and the headline: the cheapest adaptive setting whose
    accuracy reaches uniform-64's (`rollout_ratio` = its rollouts / uniform-64's; None if no
    setting reaches it), the best adaptive accuracy, and the first adaptive setting rerun under a
    total budget of a third of uniform-64's rollouts (`third_budget`).
    """
    rng = np.random.default_rng(seed)
    pass_rates = mixture.sample(n_problems, rng)
    truth = strata.stage_of(pass_rates)
    reference_rollouts = REFERENCE_N * n_problems
    third = replace(adaptive[0], total_budget=reference_rollouts // 3)
    max_trials = max(*UNIFORM_NS, *(c.max_samples for c in adaptive))
    streams = OutcomeStreams(pass_rates, max_trials, rng)

    def run(config: AllocationConfig) -> dict:
        return evaluate(config, truth, streams, strata)

    uniform_rows = [run(AllocationConfig(policy="uniform", n_uniform=n)) for n in UNIFORM_NS]
    adaptive_rows = [run(config) for config in adaptive]
    third_row = run(third)
    reference = next(r for r in uniform_rows if r["setting"] == f"n={REFERENCE_N}")
    passing = [r for r in adaptive_rows if r["accuracy"] >= reference["accuracy"]]
    best = min(passing, key=lambda r: r["rollouts"]) if passing else None
    return {
        "rows": [*uniform_rows, *adaptive_rows, third_row],
        "uniform64": reference,
        "adaptive": best,
        "rollout_ratio": best["rollouts"] / reference["rollouts"] if best else None,
        "best_adaptive_accuracy": max(r["accuracy"] for r in adaptive_rows),
        "third_budget": third_row,
    }


def _print_table(title: str, result: dict) -> None:
    print(f"\n{title}")
    print(f"{'policy':9} {'setting':52} {'accuracy':>8} {'rollouts/problem':>16} {'rounds':>6} {'s':>5}")
    for r in result["rows"]:
        print(
            f"{r['policy']:9} {r['setting']:52} {r['accuracy']:8.4f} {r['per_problem']:16.2f} "
            f"{r['rounds']:6d} {r['seconds']:5.1f}"
        )
    best = result["adaptive"]
    if best is None:
        reference = result["uniform64"]["accuracy"]
        print(f"no adaptive setting reaches uniform-{REFERENCE_N} accuracy {reference:.4f}")
    else:
        print(
            f"cheapest adaptive at >= uniform-{REFERENCE_N} accuracy: {best['setting']} -> "
            f"{result['rollout_ratio']:.3f} of uniform-{REFERENCE_N}'s rollouts"
        )


def _summary(prefix: str, result: dict) -> dict:
    best = result["adaptive"]
    return {
        f"{prefix}_rollout_ratio": result["rollout_ratio"],
        f"{prefix}_accuracy_adaptive": best["accuracy"] if best else None,
        f"{prefix}_rollouts_adaptive": best["rollouts"] if best else None,
        f"{prefix}_adaptive_setting": best["setting"] if best else None,
        f"{prefix}_accuracy_uniform64": result["uniform64"]["accuracy"],
        f"{prefix}_rollouts_uniform64": result["uniform64"]["rollouts"],
        f"{prefix}_best_adaptive_accuracy": result["best_adaptive_accuracy"],
        f"{prefix}_accuracy_adaptive_third_budget": result["third_budget"]["accuracy"],
        f"{prefix}_accuracy_uniform21": next(
            r["accuracy"] for r in result["rows"] if r["policy"] == "uniform" and r["setting"] == "n=21"
        ),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    default = Strata()
    stages_only = Strata(default.edges, exclude_solved=False, exclude_unsolved=False)
    with_excluded = simulate(args.problems, args.seed, default)
    without = simulate(args.problems, args.seed, stages_only)
    edges = ", ".join(f"{e:.3g}" for e in default.edges)
    _print_table(f"strata ({edges}), solved/unsolved excluded, {args.problems} problems", with_excluded)
    _print_table(f"strata ({edges}), nothing excluded, {args.problems} problems", without)
    summary = {"sim_problems": args.problems, "sim_seed": args.seed}
    summary |= _summary("sim", with_excluded) | _summary("sim_stages_only", without)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
