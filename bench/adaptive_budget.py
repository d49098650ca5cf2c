"""Rollouts needed to label difficulty strata: adaptive allocation vs uniform n, in simulation.

A pool of problems with known pass rates (a mixture: exactly 0, exactly 1, and a U-shaped Beta
spread) is "rolled out" by Bernoulli draws. Each policy's label for a problem is the class the
pipeline assigns from its counts (`Strata.observed_class`: every trial passed → solved, none →
unsolved, else the stage of s / n); accuracy is the fraction of labels equal to the class of the
true pass rate (`Strata.class_of`). Every policy reads the same pre-drawn outcome stream per
problem (common random numbers), so differences between rows are not sampling noise of the pool.

The default strata (whatever `Strata()` is: solved and unsolved excluded), the same edges with
nothing excluded, and `THIRDS` (1, 2/3, 1/3, 0) are measured. They differ in what is hard:
telling p == 1 from p = 0.99 takes many rollouts whatever the policy, and with solved / unsolved as
classes that distinction is part of the label.

Accuracy is reported plainly and weighted by p(1 - p) of the true pass rate: in RL with binary
rewards that is a problem's learning signal, so calling p = 0.99 "solved" costs almost nothing and
calling p = 0.5 "unsolved" costs the most. Every adaptive setting runs under both allocation
objectives (`AllocationConfig.objective`: `accuracy`, every class alike; `signal`, a wrong class
costing its p(1 - p)), side by side on the same outcomes. `--sweep` adds a grid of adaptive settings
(confidence, rollout price, cap, round size) to the default-strata pool; the headlines name the
cheapest setting that reaches uniform-64's accuracy, plain and weighted, over all settings and per
objective. Beside them, `bound` gives what the Bayes-optimal rule (the pool's true prior, one
rollout per round) needs for uniform-64's weighted accuracy: no policy that labels with
`Strata.observed_class` is expected to need less.

A second part runs the real thing: the embedded SmolLM2 model (vLLM, T = 0.8, 64 tokens) on 211
reasoning-gym problems (`REAL_GENERATORS` x levels 0-2), with its rollouts cached under
$GRADUS_HOME, so reruns are cheap. Every problem gets rollouts 0..max+reference-1, generated in
sample-index order, so a run cut short leaves every problem the same prefix; the adaptive policy
(default settings, capped at max) reads indices 0..max-1 round by round, uniform-max reads all of
them, uniform-n reads 0..n-1 with n matched to the adaptive spend, and all are compared with a
reference class from the disjoint indices max..max+reference-1 (or, with --real-reference 0, with
uniform-max's class). Both the default strata and `THIRDS` are reported.

A third part (`prior_quality`, `--prior-problems`) relabels a simulated pool with per-problem priors
from earlier labels of known quality (the true p measured with 4, 16 or 64 rollouts; and the same
of pass rates that moved by N(0, 0.15)), each source's strength fitted on the first round as a
relabel does: `prior_ratio_<m>` is the cheapest rollouts over uniform-16's at uniform-16's
p(1 - p)-weighted accuracy or better, over a ladder of rollout prices, `prior_ratio_pool` the same
under the pool prior; `prior_*_100k` the cost of the per-prior tables at 100k problems.

Run: PYTHONPATH=. .venv/bin/python bench/adaptive_budget.py [--problems N] [--seed S] [--sweep]
         [--skip-real | --real-only] [--real-per-level 24] [--real-max 64] [--real-reference 32]
         [--prior-problems 2000]
Prints tables, then on its last line one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from pipeline.difficulty.estimators import BetaPrior
from pipeline.difficulty.strata import Strata
from pipeline.labels.priors import PriorSource, SourcePriors
from pipeline.rollouts.allocation import (
    MIN_POOL_TO_FIT,
    OBJECTIVES,
    AllocationConfig,
    PriorsFromFirstRound,
    ProblemPriors,
    expected_outcome,
    plan_round,
    run_allocation,
)

UNIFORM_NS = (4, 8, 16, 21, 32, 64)
"""Uniform baselines; 21 is a third of 64, the rollouts the adaptive policy is meant to fit in."""
REFERENCE_N = 64
ADAPTIVE = tuple(dict.fromkeys((  # the defaults may be one of the grid's settings
    AllocationConfig(policy="adaptive"),
    *(
        AllocationConfig(policy="adaptive", max_samples=cap, confidence=1.0, min_gain=min_gain)
        for cap in (128, 256)
        for min_gain in (0.0006, 0.0008, 0.001, 0.0012, 0.0015)
    ),
    AllocationConfig(policy="adaptive", max_samples=256, confidence=0.99, min_gain=0.001),
    AllocationConfig(policy="adaptive", max_samples=256, confidence=1.0, min_gain=0.001,
                     min_samples=8, batch_per_problem=8),
)))
"""Adaptive settings measured, each under every objective: the defaults, and a grid of rollout
prices (`min_gain`) and caps around the price at which the signal objective matches uniform-64's
p(1 - p)-weighted accuracy, with the confidence stop off (1.0), once on and once with rounds of 8."""
THIRDS = (1.0, 2 / 3, 1 / 3, 0.0)
"""Equal-width strata reported beside the default (whose lower edges suit SmolLM2, which rarely
passes above 2/3): where the edges sit decides how many problems lie near one, which is where
rollouts go."""
BOUND_CAP = 256
"""Cap of the Bayes-optimal reference rule (`bound`): a larger one changed its spend by < 0.5 %."""


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

    def prior(self) -> BetaPrior:
        return BetaPrior(self.alpha, self.beta, solved_mass=self.solved, unsolved_mass=self.unsolved)

    def mean_signal(self) -> float:
        """E[4p(1 - p)] over the pool: the point masses carry none."""
        a, b = self.alpha, self.beta
        return (1.0 - self.solved - self.unsolved) * 4.0 * a * b / ((a + b) * (a + b + 1.0))

    def sample(self, n_problems: int, rng: np.random.Generator) -> NDArray[np.float64]:
        u = rng.random(n_problems)
        spread = rng.beta(self.alpha, self.beta, n_problems)
        return np.where(u < self.unsolved, 0.0, np.where(u < self.unsolved + self.solved, 1.0, spread))


class OutcomeStreams:
    """Pre-drawn Bernoulli outcomes per problem; a policy consumes each problem's stream in order."""

    def __init__(self, pass_rates: NDArray[np.float64], max_trials: int, rng: np.random.Generator):
        self._set(rng.random((pass_rates.size, max_trials)) < pass_rates[:, None])

    @classmethod
    def from_outcomes(cls, passed: NDArray[np.bool_]) -> OutcomeStreams:
        """Streams of given outcomes (problems x rollouts, e.g. a bank of real verified rollouts)."""
        streams = cls.__new__(cls)
        streams._set(passed)
        return streams

    def _set(self, passed: NDArray[np.bool_]) -> None:
        self._cumulative = np.zeros((passed.shape[0], passed.shape[1] + 1), dtype=np.int32)
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
    priors: PriorsFromFirstRound | None = None,
) -> dict:
    """One policy run over the pool: accuracy against `truth`, plain and weighted by each
    problem's learning `signal`, rollouts, rounds, wall time."""
    start = time.perf_counter()
    result = run_allocation(streams.sampler(), truth.size, strata, config, priors=priors)
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
    """Adaptive settings around the defaults: stopping confidence, rollout price, caps, round sizes."""
    return [
        AllocationConfig(policy="adaptive", max_samples=cap, confidence=confidence, min_gain=min_gain,
                         min_samples=batch, batch_per_problem=batch)
        for cap in (128, 256)
        for confidence in (0.95, 0.99, 1.0)
        for min_gain in (0.0005, 0.0008, 0.001, 0.0012, 0.0015, 0.002)
        for batch in (2, 4, 8)
    ]


def expected_weighted(
    config: AllocationConfig, strata: Strata, mixture: PoolMixture = PoolMixture()
) -> tuple[float, float]:
    """Expected rollouts per problem and p(1 - p)-weighted accuracy of `config` (signal objective,
    whose score is 1 - the expected weighted loss) on the mixture, exactly
    (`allocation.expected_outcome`, the true prior held fixed)."""
    if config.objective != "signal":
        raise ValueError("expected_weighted reads the signal objective's score; got objective " + config.objective)
    rollouts, score = expected_outcome(mixture.prior(), strata, config)
    return rollouts, 1.0 - (1.0 - score) / mixture.mean_signal()


def bound(strata: Strata, mixture: PoolMixture = PoolMixture(), cap: int = BOUND_CAP) -> dict:
    """Rollouts of the Bayes-optimal rule at uniform-64's p(1 - p)-weighted accuracy, as a share of
    uniform-64's: the signal objective with the pool's true prior, one rollout per round, no
    confidence stop, its rollout price bisected until the accuracy just matches. Both sides are
    exact expectations (`allocation.expected_outcome`), not samples. Since it stops each problem
    optimally for its price knowing the prior, no policy that labels with `Strata.observed_class`
    is expected to spend less on this pool at that accuracy.
    """
    prior = mixture.prior()

    def weighted(config: AllocationConfig) -> tuple[float, float]:
        return expected_weighted(config, strata, mixture)

    _, target = weighted(AllocationConfig(policy="uniform", samples_per_problem=REFERENCE_N))
    rule = AllocationConfig(policy="adaptive", min_samples=1, batch_per_problem=1, max_samples=cap,
                            confidence=1.0, prior=prior)
    lo, hi = 1e-5, 1e-1  # prices: the accuracy falls as the price rises
    for _ in range(24):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if weighted(replace(rule, min_gain=mid))[1] >= target else (lo, mid)
    rollouts, accuracy = weighted(replace(rule, min_gain=lo))
    return {"rollout_ratio": rollouts / REFERENCE_N, "weighted_accuracy": accuracy,
            "uniform64_weighted_accuracy": target, "price": lo}


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
    truth = strata.class_of(pass_rates)
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


REAL_GENERATORS = ("products", "chain_sum", "basic_arithmetic")
"""Generators whose easiest levels SmolLM2 solves some of the time (short answers, 24-35 tokens);
with their harder levels the pool's pass rates spread from 0 to about 0.5."""
REAL_LEVELS = (0, 1, 2)


def real_pool(per_level: int) -> pd.DataFrame:
    """`per_level` problems of each generator in `REAL_GENERATORS` at each of `REAL_LEVELS`."""
    from pipeline.core.records import Problem
    from pipeline.ingest.sources import ReasoningGymSource, load_problems

    sources = [ReasoningGymSource(name, levels=REAL_LEVELS, size_per_level=per_level) for name in REAL_GENERATORS]
    return Problem.to_frame(load_problems(sources).problems)


def real(strata_list: Sequence[Strata], per_level: int, cap: int, reference_n: int) -> dict:
    """Adaptive allocation vs uniform-`cap` on SmolLM2 (vLLM), from one rollout cache under $GRADUS_HOME.

    Every problem gets rollouts 0..cap+reference_n-1, generated in sample-index order (index 0 of
    every problem, then index 1, ...), so a run cut short leaves every problem the same prefix and
    a rerun generates only the rest. The adaptive policy (the library's default settings, capped
    at `cap`) reads indices 0..cap-1 round by round; uniform-`cap` reads all of them, and uniform-n
    reads 0..n-1 with n matched to the adaptive spend. The reference class of a problem comes from
    the disjoint indices cap..cap+reference_n-1, or with `reference_n` 0 from uniform-`cap` itself.
    The figures of the first strata carry no suffix; later strata's keys end in their edges.
    """
    from pipeline.core.model import embedded_model
    from pipeline.core.progress import Progress
    from pipeline.core.storage import gradus_home
    from pipeline.engines import create_engine
    from pipeline.engines.base import SamplingConfig
    from pipeline.rollouts.sampling import sample_rollouts
    from pipeline.rollouts.store import RolloutStore, missing_requests
    from pipeline.verify.scoring import score_rollouts
    from pipeline.verify.verification import VerifierPool

    home = gradus_home()
    model = embedded_model(home)
    sampling = SamplingConfig(temperature=0.8, top_p=1.0, max_tokens=64, seed=0)
    store = RolloutStore(home, model, sampling, engine="vllm")
    problems = real_pool(per_level)
    ids = problems["problem_id"].tolist()
    if len(ids) < MIN_POOL_TO_FIT:
        print(f"warning: {len(ids)} problems are fewer than the {MIN_POOL_TO_FIT} the allocation fits its "
              "prior to: the adaptive policy runs on a flat prior and cannot stop early (raise "
              "--real-per-level)", flush=True)
    total = cap + reference_n
    todo = sorted(missing_requests(problems, total, store.coverage(ids, total)), key=lambda r: r.sample_index)
    print(f"\nreal: {len(ids)} problems x {total} rollouts, {len(todo)} not cached yet (home {home})", flush=True)
    started = time.perf_counter()
    if todo:
        progress = Progress("real rollouts", len(todo), lambda line: print(line, flush=True),
                            unit="rollouts", every_s=30)
        with create_engine("vllm", model) as engine:
            engine.generate(todo, sampling, lambda done, _, tok_s: progress.update(done, f"{tok_s:.0f} tok/s"),
                            on_batch=store.append)
    generate_s = time.perf_counter() - started
    figures: dict = {"real_problems": len(ids), "real_max_samples": cap,
                     "real_reference_rollouts_per_problem": reference_n or cap,
                     "real_reference_disjoint": reference_n > 0, "real_generated_this_run": len(todo)}
    with VerifierPool(workers=2) as pool:

        def scorer(frame):
            return score_rollouts(problems, frame, pool, "auto")

        def counts(frame) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
            grouped = scorer(frame).groupby("problem_id")["passed"].agg(["sum", "count"]).reindex(ids)
            return grouped["sum"].to_numpy(np.int64), grouped["count"].to_numpy(np.int64)

        everything = store.load(ids, total)
        outcomes = scorer(everything)[["problem_id", "passed"]].assign(
            sample_index=everything["sample_index"].to_numpy())

        def counts_below(lo: int, hi: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
            rows = outcomes[(outcomes["sample_index"] >= lo) & (outcomes["sample_index"] < hi)]
            grouped = rows.groupby("problem_id")["passed"].agg(["sum", "count"]).reindex(ids)
            return grouped["sum"].to_numpy(np.int64), grouped["count"].to_numpy(np.int64)

        full_s, full_n = counts_below(0, cap)
        ref_s, ref_n = counts_below(cap, total) if reference_n else (full_s, full_n)
        rate = full_s / full_n
        figures["real_pass_rate_mean"] = round(float(rate.mean()), 4)
        figures["real_share_never_passed"] = round(float(np.mean(full_s == 0)), 4)

        def cached_only():
            raise RuntimeError("every rollout should come from the store here")

        for k, strata in enumerate(strata_list):
            suffix = "" if k == 0 else f"_{edges_key(strata)}"
            config = AllocationConfig(policy="adaptive", max_samples=cap,
                                      min_samples=min(AllocationConfig.min_samples, cap))
            adaptive = sample_rollouts(problems, store, cached_only, config, strata, scorer)
            a_s, a_n = counts(store.load_allocated(adaptive.allocation))
            spent = int(a_n.sum())
            n_uniform = max(1, round(spent / len(ids)))
            u_s, u_n = counts_below(0, n_uniform)
            reference = strata.observed_class(ref_s, ref_n)
            # The reference's own pass rate stands in for the true one in the learning-signal weights.
            signal = signal_weights(ref_s / ref_n)
            agree = {name: strata.observed_class(s, n) == reference
                     for name, (s, n) in (("adaptive", (a_s, a_n)), ("uniform", (u_s, u_n)),
                                          ("uniform_cap", (full_s, full_n)))}

            def weighted(a: NDArray[np.bool_]) -> float:
                return round(float(np.sum(signal * a) / np.sum(signal)), 4)

            figures |= {
                f"real_rollouts_adaptive{suffix}": spent,
                f"real_rollouts_uniform{suffix}": int(u_n.sum()),
                f"real_rollout_ratio{suffix}": round(spent / (cap * len(ids)), 4),
                f"real_agreement_adaptive{suffix}": round(float(agree["adaptive"].mean()), 4),
                f"real_agreement_uniform{suffix}": round(float(agree["uniform"].mean()), 4),
                f"real_weighted_agreement_adaptive{suffix}": weighted(agree["adaptive"]),
                f"real_weighted_agreement_uniform{suffix}": weighted(agree["uniform"]),
                f"real_class_counts{suffix}": {int(c): int(np.sum(reference == c)) for c in strata.classes},
            }
            if reference_n:
                figures |= {
                    f"real_agreement_uniform{cap}{suffix}": round(float(agree["uniform_cap"].mean()), 4),
                    f"real_weighted_agreement_uniform{cap}{suffix}": weighted(agree["uniform_cap"]),
                }
            edges = ", ".join(f"{e:.3g}" for e in strata.edges)
            against = f"{reference_n} disjoint rollouts" if reference_n else f"uniform-{cap}"
            print(f"real, strata ({edges}): SmolLM2-135M, {len(ids)} problems, reference class from {against}")
            print(f"  adaptive ({config.min_samples}..{cap}, {config.objective}): {spent} rollouts "
                  f"({spent / (cap * len(ids)):.3f} of uniform-{cap}), agreement {agree['adaptive'].mean():.3f}, "
                  f"weighted {weighted(agree['adaptive']):.3f}")
            print(f"  uniform n={n_uniform}: {int(u_n.sum())} rollouts, agreement {agree['uniform'].mean():.3f}, "
                  f"weighted {weighted(agree['uniform']):.3f}")
            if reference_n:
                print(f"  uniform n={cap}: agreement {agree['uniform_cap'].mean():.3f}, "
                      f"weighted {weighted(agree['uniform_cap']):.3f}")
    print(f"real: generated {len(todo)} rollouts in {generate_s:.0f} s", flush=True)
    return figures


def edges_key(strata: Strata) -> str:
    return "edges_" + "_".join(f"{e:.3g}" for e in strata.edges)


def simulation_summary(n_problems: int, seed: int, sweep: bool) -> dict:
    """The simulated part: tables printed, headline figures returned.

    The default strata (whatever `Strata()` is) carry the unprefixed `sim_` keys; the same edges
    with nothing excluded `sim_stages_only_`, and `THIRDS`, if they differ from the default,
    `sim_edges_..._`. `_bound_` keys are the Bayes-optimal rule's (`bound`).
    """
    default = Strata()
    stages_only = Strata(default.edges, exclude_solved=False, exclude_unsolved=False)
    settings = (*ADAPTIVE, *sweep_grid()) if sweep else ADAPTIVE
    summary: dict = {"sim_problems": n_problems, "sim_seed": seed}
    runs = [("sim", default, settings), ("sim_stages_only", stages_only, ADAPTIVE)]
    if Strata(THIRDS) != default:
        runs.append((f"sim_{edges_key(Strata(THIRDS))}", Strata(THIRDS), ADAPTIVE))
    for prefix, strata, adaptive in runs:
        result = simulate(n_problems, seed, strata, adaptive=adaptive)
        edges = ", ".join(f"{e:.3g}" for e in strata.edges)
        excluded = "solved/unsolved excluded" if strata.exclude_solved else "nothing excluded"
        _print_table(f"strata ({edges}), {excluded}, {n_problems} problems", result)
        summary |= _summary(prefix, result)
        if strata.exclude_solved:
            best = bound(strata)
            rollouts, accuracy = expected_weighted(AllocationConfig(policy="adaptive"), strata)
            summary |= {f"{prefix}_bound_rollout_ratio_signal_weighted": round(best["rollout_ratio"], 4),
                        f"{prefix}_bound_price": round(best["price"], 6),
                        f"{prefix}_expected_weighted_accuracy_uniform64": round(best["uniform64_weighted_accuracy"], 4),
                        f"{prefix}_default_expected_rollout_ratio": round(rollouts / REFERENCE_N, 4),
                        f"{prefix}_default_expected_weighted_accuracy": round(accuracy, 4)}
            print(f"Bayes-optimal rule (true prior, one rollout per round, price {best['price']:.5f}): "
                  f"{best['rollout_ratio']:.3f} of uniform-{REFERENCE_N}'s rollouts at its expected p(1-p)-weighted "
                  f"accuracy {best['uniform64_weighted_accuracy']:.4f}; the default settings are expected to "
                  f"spend {rollouts / REFERENCE_N:.3f} of it for {accuracy:.4f}")
        if prefix != "sim":
            continue
        reference = result["uniform64"]
        for o in ("", *OBJECTIVES):  # "": the default config as shipped
            config = AllocationConfig(policy="adaptive", **({"objective": o} if o else {}))
            row = next(r for r in result["rows"] if r["config"] == config)
            key = f"sim_objective_{o}_default" if o else "sim_default"
            summary |= {
                f"{key}_setting": row["setting"],
                f"{key}_rollouts_over_uniform64": round(row["rollouts"] / reference["rollouts"], 4),
                f"{key}_accuracy": row["accuracy"],
                f"{key}_weighted_accuracy": row["weighted_accuracy"],
            }
    summary["sim_settings_measured"] = len(settings) * len(OBJECTIVES)
    return summary


PRIOR_QUALITIES = (4, 16, 64)
"""Strengths of the simulated earlier labels: each problem's true p measured before with this many
rollouts (the prior's noise), the sources' discount then fitted on the first round as in a relabel."""
PRIOR_PRICES = (0.001, 0.002, 0.003, 0.004, 0.006, 0.008, 0.012, 0.016, 0.024)
"""Rollout prices tried with per-problem priors: the cheapest reaching uniform-16's weighted accuracy counts."""
PRIOR_REFERENCE_N = 16


def prior_quality(n_problems: int, seed: int, strata: Strata = Strata(), mixture: PoolMixture = PoolMixture()) -> dict:
    """Rollouts with per-problem priors of known quality over uniform-16's, at uniform-16's p(1 - p)-
    weighted accuracy or better (`prior_ratio_<m>`), beside the pool prior's (`prior_ratio_pool`); and
    `..._drifted`: the same earlier labels of a model whose pass rates moved (true p plus N(0, 0.15))."""
    rng = np.random.default_rng(seed)
    p = mixture.sample(n_problems, rng)
    truth, signal = strata.class_of(p), signal_weights(p)
    streams = OutcomeStreams(p, 256, rng)
    reference = evaluate(AllocationConfig(policy="uniform", samples_per_problem=PRIOR_REFERENCE_N), truth, signal,
                         streams, strata)

    def ratio(priors: PriorsFromFirstRound | None) -> tuple[float | None, dict]:
        rows = [evaluate(AllocationConfig(policy="adaptive", min_gain=g), truth, signal, streams, strata, priors)
                for g in PRIOR_PRICES]
        best = _cheapest_reaching(rows, reference, "weighted_accuracy")
        print(" ".join(f"{r['config'].min_gain}: {r['per_problem']:.1f} "
                       f"{r['weighted_accuracy']:.4f}" for r in rows))
        return (best["rollouts"] / reference["rollouts"] if best else None), best or {}

    out = {"prior_problems": n_problems, "prior_uniform16_weighted_accuracy": reference["weighted_accuracy"]}
    out["prior_ratio_pool"], _ = ratio(None)
    drifted = np.clip(p + rng.normal(0, 0.15, p.size), 0, 1)
    for m in PRIOR_QUALITIES:
        for name, rates in ((f"{m}", p), (f"{m}_drifted", drifted)):
            make = SourcePriors([PriorSource(f"earlier-{name}", rng.binomial(m, rates).astype(float),
                                             np.full(p.size, float(m)))])
            out[f"prior_ratio_{name}"], best = ratio(make)
            out[f"prior_strength_{name}"] = round(float(make.strengths[0]), 2)
            out[f"prior_weighted_accuracy_{name}"] = best.get("weighted_accuracy")
            print(f"earlier labels {name}: fitted strength {make.strengths[0]:.1f}, ratio {out[f'prior_ratio_{name}']}")
    out |= prior_table_cost(100_000, rng)
    return out


def prior_table_cost(n_problems: int, rng: np.random.Generator) -> dict:
    """Seconds to plan a round for 100k problems under their own priors (every distinct rounded
    prior's tables built), then again from the built tables (what every later round costs)."""
    trials = rng.uniform(0, 200, n_problems)
    priors = ProblemPriors(PoolMixture().prior(), trials * rng.random(n_problems), trials)
    s, n = rng.binomial(4, 0.4, n_problems), np.full(n_problems, 4)
    config = AllocationConfig(policy="adaptive")
    seconds = []
    for _ in range(2):
        start = time.perf_counter()
        plan_round(s, n, Strata(), config, priors=priors)
        seconds.append(round(time.perf_counter() - start, 2))
    return {"prior_groups_100k": int(priors.groups()[0].shape[1]), "prior_first_assess_s_100k": seconds[0],
            "prior_cached_assess_s_100k": seconds[1]}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sweep", action="store_true",
                        help="measure a grid of adaptive settings (confidence, min_gain, round size) too")
    parser.add_argument("--skip-real", action="store_true", help="simulation only (no model)")
    parser.add_argument("--real-per-level", type=int, default=24,
                        help="real pool: problems per generator and level (3 generators x 3 levels)")
    parser.add_argument("--real-max", type=int, default=64,
                        help="real: rollouts of uniform, and the adaptive cap, per problem")
    parser.add_argument("--real-reference", type=int, default=32,
                        help="real: disjoint rollouts per problem that the reference class is read from "
                        "(0: uniform-max is the reference)")
    parser.add_argument("--real-only", action="store_true", help="the real part only (no simulation)")
    parser.add_argument("--prior-problems", type=int, default=2000,
                        help="simulated pool for the per-problem prior figures (0: skip them)")
    args = parser.parse_args(argv)

    summary = {} if args.real_only else simulation_summary(args.problems, args.seed, args.sweep)
    if args.prior_problems and not args.real_only:
        summary |= prior_quality(args.prior_problems, args.seed)
    if not args.skip_real:
        strata = tuple(dict.fromkeys((Strata(), Strata(THIRDS))))  # THIRDS once, should it become the default
        summary |= real(strata, args.real_per_level, args.real_max, args.real_reference)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
