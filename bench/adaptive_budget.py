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

Accuracy is reported plainly and weighted by p(1 - p) of the true pass rate: in RL with binary
rewards that is a problem's learning signal, so calling p = 0.99 "solved" costs almost nothing and
calling p = 0.5 "unsolved" costs the most. Every adaptive setting runs under both allocation
objectives (`AllocationConfig.objective`: `accuracy`, every class alike; `signal`, a wrong class
costing its p(1 - p)), side by side on the same outcomes. `--sweep` adds a grid of adaptive settings
(confidence, min_gain, round size) to the default-strata pool; the headlines name the cheapest
setting that reaches uniform-64's accuracy, plain and weighted, over all settings and per objective.

A second part runs the real thing: the embedded SmolLM2 model (vLLM) on `probe_vs_rollouts.py`'s
pool, with its sampling settings, so the two benches share one rollout cache under $GRADUS_HOME and
reruns are cheap. Every problem gets rollouts 0..cap+reference-1 once; adaptive allocation reads
indices 0..cap-1 round by round, uniform reads 0..n-1 with n matched to the adaptive spend, and both
are compared with a reference class from the disjoint indices cap..cap+reference-1.

Run: PYTHONPATH=. .venv/bin/python bench/adaptive_budget.py [--problems N] [--seed S] [--sweep] [--skip-real]
         [--real-per-level 17] [--real-max 16] [--real-reference 32]
Prints tables, then on its last line one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from pipeline.allocation import MIN_POOL_TO_FIT, OBJECTIVES, AllocationConfig, run_allocation
from pipeline.strata import Strata

UNIFORM_NS = (4, 8, 16, 21, 32, 64)
"""Uniform baselines; 21 is a third of 64, the rollouts the adaptive policy is meant to fit in."""
REFERENCE_N = 64
ADAPTIVE = (
    AllocationConfig(policy="adaptive"),
    AllocationConfig(policy="adaptive", max_samples=128, confidence=0.9, min_gain=0.0003),
    AllocationConfig(policy="adaptive", max_samples=128, confidence=0.95, min_gain=0.0008),
    AllocationConfig(policy="adaptive", max_samples=128, confidence=0.95, min_gain=0.0005),
    AllocationConfig(policy="adaptive", max_samples=128, confidence=0.99, min_gain=0.0005),
    AllocationConfig(policy="adaptive", max_samples=128, confidence=0.99, min_gain=0.0003),
    AllocationConfig(policy="adaptive", max_samples=128, confidence=0.99, min_gain=0.0005,
                     min_samples=8, batch_per_problem=8),
    AllocationConfig(policy="adaptive", max_samples=128, confidence=0.995, min_gain=0.0001),
    AllocationConfig(policy="adaptive", max_samples=256, confidence=0.98, min_gain=0.0002),
    AllocationConfig(policy="adaptive", max_samples=256, confidence=0.995, min_gain=0.0002),
)
"""Adaptive settings measured, each under every objective: the defaults, and a grid around them
picked in exploratory runs (the last four are the cheapest the signal objective reached uniform-64's
accuracy with, plain and weighted, in a sweep of 162 settings under each objective)."""


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
    config: AllocationConfig,
    truth: NDArray[np.int64],
    signal: NDArray[np.float64],
    streams: OutcomeStreams,
    strata: Strata,
) -> dict:
    """One policy run over the pool: accuracy against `truth`, plain and weighted by each
    problem's learning `signal`, rollouts, rounds, wall time."""
    start = time.perf_counter()
    result = run_allocation(streams.sampler(), truth.size, strata, config)
    seconds = time.perf_counter() - start
    correct = strata.observed_class(result.successes, result.trials) == truth
    return {
        "policy": config.policy,
        "setting": _describe(config),
        "config": config,
        "accuracy": float(np.mean(correct)),
        "weighted_accuracy": float(np.sum(signal * correct) / np.sum(signal)),
        "rollouts": result.total_rollouts,
        "per_problem": result.total_rollouts / truth.size,
        "rounds": result.rounds,
        "seconds": seconds,
    }


def _describe(config: AllocationConfig) -> str:
    if config.policy == "uniform":
        return f"n={config.samples_per_problem}"
    text = (
        f"{config.objective} conf={config.confidence} gain={config.min_gain} "
        f"n={config.min_samples}..{config.max_samples} +{config.batch_per_problem}"
    )
    return text + (f" budget={config.total_budget}" if config.total_budget is not None else "")


def signal_weights(pass_rates: NDArray[np.float64]) -> NDArray[np.float64]:
    """A problem's learning signal in RL with binary rewards: the reward variance p(1 - p).

    A problem every rollout passes (or fails) teaches nothing, so mislabelling p = 0.99 as solved
    costs almost nothing, and mislabelling p = 0.5 costs the most.
    """
    return pass_rates * (1.0 - pass_rates)


def sweep_grid() -> list[AllocationConfig]:
    """Adaptive settings around the defaults: stopping confidence, minimum gain, round sizes."""
    return [
        AllocationConfig(policy="adaptive", max_samples=cap, confidence=confidence, min_gain=min_gain,
                         min_samples=batch, batch_per_problem=batch)
        for cap in (64, 128)
        for confidence in (0.8, 0.9, 0.95, 0.99)
        for min_gain in (0.0002, 0.0005, 0.001, 0.002, 0.005)
        for batch in (2, 4, 8)
    ]


def _cheapest_reaching(rows: list[dict], reference: dict, key: str) -> dict | None:
    passing = [r for r in rows if r[key] >= reference[key]]
    return min(passing, key=lambda r: r["rollouts"]) if passing else None


def simulate(
    n_problems: int = 10_000,
    seed: int = 0,
    strata: Strata = Strata(),
    mixture: PoolMixture = PoolMixture(),
    adaptive: Sequence[AllocationConfig] = ADAPTIVE,
) -> dict:
    """Accuracy and rollouts of uniform n and of each adaptive setting on one simulated pool.

    Every setting in `adaptive` runs once per objective. Returns `rows` (one per policy run) and
    the headlines: the cheapest adaptive setting whose accuracy reaches uniform-64's
    (`rollout_ratio` = its rollouts / uniform-64's; None if no setting reaches it), the same with
    accuracy weighted by p(1 - p) of the true pass rate (`weighted_ratio`), both also per
    objective (`by_objective`), the best adaptive accuracy, and the first adaptive setting rerun
    under a total budget of a third of uniform-64's rollouts (`third_budget`).
    """
    rng = np.random.default_rng(seed)
    pass_rates = mixture.sample(n_problems, rng)
    truth = strata.stage_of(pass_rates)
    signal = signal_weights(pass_rates)
    reference_rollouts = REFERENCE_N * n_problems
    third = replace(adaptive[0], total_budget=reference_rollouts // 3)
    max_trials = max(*UNIFORM_NS, *(c.max_samples for c in adaptive))
    streams = OutcomeStreams(pass_rates, max_trials, rng)

    def run(config: AllocationConfig) -> dict:
        return evaluate(config, truth, signal, streams, strata)

    uniform_rows = [run(AllocationConfig(policy="uniform", samples_per_problem=n)) for n in UNIFORM_NS]
    adaptive_rows = [run(replace(config, objective=o)) for o in OBJECTIVES for config in adaptive]
    third_row = run(third)
    reference = next(r for r in uniform_rows if r["setting"] == f"n={REFERENCE_N}")
    best = _cheapest_reaching(adaptive_rows, reference, "accuracy")
    weighted = _cheapest_reaching(adaptive_rows, reference, "weighted_accuracy")
    by_objective = {}
    for o in OBJECTIVES:
        rows = [r for r in adaptive_rows if r["config"].objective == o]
        cheapest = {key: _cheapest_reaching(rows, reference, key) for key in ("accuracy", "weighted_accuracy")}
        by_objective[o] = {
            key: cheapest[key]["rollouts"] / reference["rollouts"] if cheapest[key] else None for key in cheapest
        }
    return {
        "rows": [*uniform_rows, *adaptive_rows, third_row],
        "uniform64": reference,
        "adaptive": best,
        "rollout_ratio": best["rollouts"] / reference["rollouts"] if best else None,
        "adaptive_weighted": weighted,
        "weighted_ratio": weighted["rollouts"] / reference["rollouts"] if weighted else None,
        "by_objective": by_objective,
        "best_adaptive_accuracy": max(r["accuracy"] for r in adaptive_rows),
        "third_budget": third_row,
    }


def _print_table(title: str, result: dict) -> None:
    print(f"\n{title}")
    print(f"{'policy':9} {'setting':52} {'accuracy':>8} {'weighted':>8} {'rollouts/problem':>16} {'rounds':>6} {'s':>5}")
    for r in result["rows"]:
        print(
            f"{r['policy']:9} {r['setting']:52} {r['accuracy']:8.4f} {r['weighted_accuracy']:8.4f} "
            f"{r['per_problem']:16.2f} {r['rounds']:6d} {r['seconds']:5.1f}"
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
    weighted = result["adaptive_weighted"]
    if weighted is None:
        print(f"no adaptive setting reaches uniform-{REFERENCE_N} p(1-p)-weighted accuracy "
              f"{result['uniform64']['weighted_accuracy']:.4f}")
    else:
        print(
            f"cheapest adaptive at >= uniform-{REFERENCE_N} p(1-p)-weighted accuracy: {weighted['setting']} -> "
            f"{result['weighted_ratio']:.3f} of uniform-{REFERENCE_N}'s rollouts"
        )
    for o, ratios in result["by_objective"].items():
        shown = {key: "none reaches it" if r is None else f"{r:.3f}" for key, r in ratios.items()}
        print(f"objective {o}: rollouts / uniform-{REFERENCE_N}'s at its accuracy {shown['accuracy']}, "
              f"at its p(1-p)-weighted accuracy {shown['weighted_accuracy']}")


def _summary(prefix: str, result: dict) -> dict:
    best, weighted = result["adaptive"], result["adaptive_weighted"]
    return {
        f"{prefix}_rollout_ratio": result["rollout_ratio"],
        f"{prefix}_accuracy_adaptive": best["accuracy"] if best else None,
        f"{prefix}_rollouts_adaptive": best["rollouts"] if best else None,
        f"{prefix}_adaptive_setting": best["setting"] if best else None,
        f"{prefix}_accuracy_uniform64": result["uniform64"]["accuracy"],
        f"{prefix}_rollout_ratio_signal_weighted": result["weighted_ratio"],
        f"{prefix}_weighted_accuracy_adaptive": weighted["weighted_accuracy"] if weighted else None,
        f"{prefix}_adaptive_setting_signal_weighted": weighted["setting"] if weighted else None,
        f"{prefix}_weighted_accuracy_uniform64": result["uniform64"]["weighted_accuracy"],
        f"{prefix}_rollouts_uniform64": result["uniform64"]["rollouts"],
        f"{prefix}_best_adaptive_accuracy": result["best_adaptive_accuracy"],
        f"{prefix}_accuracy_adaptive_third_budget": result["third_budget"]["accuracy"],
        f"{prefix}_accuracy_uniform21": next(
            r["accuracy"] for r in result["rows"] if r["policy"] == "uniform" and r["setting"] == "n=21"
        ),
    } | {
        f"{prefix}_objective_{o}_{name}": ratios[key]
        for o, ratios in result["by_objective"].items()
        for name, key in (("rollout_ratio", "accuracy"), ("rollout_ratio_signal_weighted", "weighted_accuracy"))
    }


def real(strata: Strata, per_level: int, cap: int, reference_n: int) -> dict:
    """Adaptive vs uniform at equal spend on SmolLM2, scored against a disjoint high-n reference.

    The pool is `bench/probe_vs_rollouts.py`'s (4 generators x 3 levels x `per_level`) with its
    sampling settings, so both benches read and fill one rollout cache under $GRADUS_HOME.
    """
    from bench.probe_vs_rollouts import build_problems
    from pipeline.engines import create_engine
    from pipeline.engines.base import SamplingConfig
    from pipeline.model import embedded_model
    from pipeline.rollout_store import RolloutStore, missing_requests
    from pipeline.sampling import sample_rollouts
    from pipeline.scoring import score_rollouts
    from pipeline.storage import gradus_home
    from pipeline.verification import VerifierPool

    home = gradus_home()
    model = embedded_model(home)
    sampling = SamplingConfig(temperature=0.8, top_p=1.0, max_tokens=64, seed=0)
    store = RolloutStore(home, model, sampling, engine="vllm")
    problems = build_problems(per_level)
    ids = problems["problem_id"].tolist()
    if len(ids) < MIN_POOL_TO_FIT:
        print(f"warning: {len(ids)} problems are fewer than the {MIN_POOL_TO_FIT} the allocation fits its "
              "prior to: the adaptive policy runs on a flat prior and cannot stop early (raise "
              "--real-per-level)", flush=True)
    total = cap + reference_n
    todo = missing_requests(problems, total, store.coverage(ids, total))
    print(f"\nreal: {len(ids)} problems x {total} rollouts, {len(todo)} not cached yet", flush=True)
    started = time.perf_counter()
    if todo:
        def progress(done: int, count: int, tok_s: float) -> None:
            print(f"  rollouts {done}/{count}, {tok_s:.0f} tok/s", flush=True)

        with create_engine("vllm", model) as engine:
            engine.generate(todo, sampling, progress, on_batch=store.append)
    generate_s = time.perf_counter() - started
    with VerifierPool(workers=2) as pool:

        def scorer(frame):
            return score_rollouts(problems, frame, pool, "auto")

        def counts(frame) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
            grouped = scorer(frame).groupby("problem_id")["passed"].agg(["sum", "count"]).reindex(ids)
            return grouped["sum"].to_numpy(np.int64), grouped["count"].to_numpy(np.int64)

        everything = store.load(ids, total)
        ref_s, ref_n = counts(everything[everything["sample_index"] >= cap])
        reference = strata.observed_class(ref_s, ref_n)

        def cached_only():
            raise RuntimeError("every rollout should come from the store here")

        config = AllocationConfig(policy="adaptive", min_samples=4, max_samples=cap, batch_per_problem=4)
        adaptive = sample_rollouts(problems, store, cached_only, config, strata, scorer)
        a_s, a_n = counts(store.load(ids, dict(zip(ids, adaptive.allocation["trials"].tolist()))))
        spent = int(a_n.sum())
        n_uniform = max(1, round(spent / len(ids)))
        u_s, u_n = counts(everything[everything["sample_index"] < n_uniform])
    # The reference's own pass rate stands in for the true one in the learning-signal weights.
    signal = signal_weights(ref_s / ref_n)
    agree_a = strata.observed_class(a_s, a_n) == reference
    agree_u = strata.observed_class(u_s, u_n) == reference
    figures = {
        "real_problems": len(ids),
        "real_rollouts_adaptive": spent,
        "real_rollouts_uniform": int(u_n.sum()),
        "real_rollout_ratio": round(spent / (cap * len(ids)), 4),
        "real_agreement_adaptive": round(float(agree_a.mean()), 4),
        "real_agreement_uniform": round(float(agree_u.mean()), 4),
        "real_weighted_agreement_adaptive": round(float(np.sum(signal * agree_a) / np.sum(signal)), 4),
        "real_weighted_agreement_uniform": round(float(np.sum(signal * agree_u) / np.sum(signal)), 4),
        "real_max_samples": cap,
        "real_reference_rollouts_per_problem": reference_n,
        "real_generated_this_run": len(todo),
    }
    print(f"real: SmolLM2-135M, {len(ids)} problems, reference = {reference_n} disjoint rollouts each"
          f" (generated {len(todo)} rollouts in {generate_s:.0f} s)")
    print(f"  adaptive (4..{cap}): {spent} rollouts ({figures['real_rollout_ratio']:.3f} of uniform-{cap}), "
          f"agreement {figures['real_agreement_adaptive']:.3f}, weighted {figures['real_weighted_agreement_adaptive']:.3f}")
    print(f"  uniform n={n_uniform}: {int(u_n.sum())} rollouts, agreement {figures['real_agreement_uniform']:.3f}, "
          f"weighted {figures['real_weighted_agreement_uniform']:.3f}")
    return figures


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sweep", action="store_true",
                        help="measure a grid of adaptive settings (confidence, min_gain, round size) too")
    parser.add_argument("--skip-real", action="store_true", help="simulation only (no model)")
    parser.add_argument("--real-per-level", type=int, default=17,
                        help="real pool: problems per generator and level (4 x 3 levels)")
    parser.add_argument("--real-max", type=int, default=16, help="real: the adaptive cap per problem")
    parser.add_argument("--real-reference", type=int, default=32,
                        help="real: disjoint rollouts per problem that the reference class is read from")
    args = parser.parse_args(argv)

    default = Strata()
    stages_only = Strata(default.edges, exclude_solved=False, exclude_unsolved=False)
    settings = (*ADAPTIVE, *sweep_grid()) if args.sweep else ADAPTIVE
    with_excluded = simulate(args.problems, args.seed, default, adaptive=settings)
    without = simulate(args.problems, args.seed, stages_only)
    edges = ", ".join(f"{e:.3g}" for e in default.edges)
    _print_table(f"strata ({edges}), solved/unsolved excluded, {args.problems} problems", with_excluded)
    _print_table(f"strata ({edges}), nothing excluded, {args.problems} problems", without)
    summary = {"sim_problems": args.problems, "sim_seed": args.seed}
    summary |= _summary("sim", with_excluded) | _summary("sim_stages_only", without)
    reference = with_excluded["uniform64"]
    for o in ("", *OBJECTIVES):  # "": the default config as shipped
        config = AllocationConfig(policy="adaptive", **({"objective": o} if o else {}))
        row = next(r for r in with_excluded["rows"] if r["config"] == config)
        key = f"sim_objective_{o}_default" if o else "sim_default"
        summary |= {
            f"{key}_setting": row["setting"],
            f"{key}_rollouts_over_uniform64": round(row["rollouts"] / reference["rollouts"], 4),
            f"{key}_accuracy": row["accuracy"],
            f"{key}_weighted_accuracy": row["weighted_accuracy"],
        }
    summary["sim_settings_measured"] = len(settings) * len(OBJECTIVES)
    if not args.skip_real:
        summary |= real(default, args.real_per_level, args.real_max, args.real_reference)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
