from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest

from pipeline.difficulty.estimators import BetaPrior
from pipeline.difficulty.strata import Strata
from pipeline.rollouts.allocation import AllocationConfig, expected_outcome, plan_round, run_allocation, stop_reason

STRATA = Strata((1.0, 2 / 3, 1 / 3, 0.0))


def bernoulli(pass_rates: np.ndarray, seed: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    return lambda extra: rng.binomial(extra, pass_rates)


def mixed_pool(size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    u = rng.random(size)
    return np.where(u < 0.35, 0.0, np.where(u < 0.5, 1.0, rng.beta(0.6, 0.6, size)))


def test_uniform_gives_exactly_n_in_one_round() -> None:
    p = mixed_pool(300)
    config = AllocationConfig(policy="uniform", samples_per_problem=8)
    result = run_allocation(bernoulli(p), p.size, STRATA, config)
    assert np.all(result.trials == 8)
    assert result.rounds == 1
    assert result.total_rollouts == 8 * p.size
    assert set(result.stop_reasons) == {"max_samples"}


def test_adaptive_respects_min_and_max_samples() -> None:
    p = np.concatenate([mixed_pool(400), np.full(100, 2 / 3 - 0.01)])  # some sit on a stratum edge
    config = AllocationConfig(policy="adaptive", min_samples=4, max_samples=24, batch_per_problem=4)
    first = plan_round(np.zeros(p.size, dtype=int), np.zeros(p.size, dtype=int), STRATA, config)
    assert np.all(first == 4)
    result = run_allocation(bernoulli(p), p.size, STRATA, config)
    assert np.all((result.trials >= 4) & (result.trials <= 24))
    assert np.any(result.trials == 24)
    assert set(result.stop_reasons[result.trials < 24]) == {"settled"}
    assert set(result.stop_reasons[result.trials == 24]) <= {"settled", "max_samples"}
    assert sum(result.round_rollouts) == result.total_rollouts


@pytest.mark.parametrize("policy", ["adaptive", "uniform"])
def test_budget_is_never_exceeded(policy: str) -> None:
    p = mixed_pool(500)
    config = AllocationConfig(policy=policy, samples_per_problem=16, total_budget=3_001)
    result = run_allocation(bernoulli(p), p.size, STRATA, config, rng=np.random.default_rng(0))
    assert result.total_rollouts <= 3_001
    assert "budget" in set(result.stop_reasons)


def test_plan_round_respects_an_explicit_budget_and_serves_unsampled_problems_first() -> None:
    trials = np.array([8, 8, 0, 0])
    successes = np.array([4, 5, 0, 0])
    config = AllocationConfig(policy="adaptive", max_samples=64, min_gain=0.0, confidence=1.0, prior=BetaPrior())
    extra = plan_round(successes, trials, STRATA, config, budget_left=10)
    assert extra.sum() == 10
    assert extra[2:].tolist() == [4, 4]


def test_settled_problems_get_nothing_more() -> None:
    # 0 of 8 and 8 of 8 under a prior that is almost all point mass, 15 of 30 far from any edge
    prior = BetaPrior(2.0, 2.0, solved_mass=0.45, unsolved_mass=0.5)
    successes, trials = np.array([0, 8, 15, 10]), np.array([8, 8, 30, 15])
    config = AllocationConfig(policy="adaptive", prior=prior, confidence=0.95)
    extra = plan_round(successes, trials, STRATA, config)
    reasons = stop_reason(successes, trials, STRATA, config)
    assert extra[:3].tolist() == [0, 0, 0]
    assert reasons[:3].tolist() == ["settled"] * 3
    assert extra[3] == 4 and reasons[3] == ""  # 10/15 sits on the 2/3 edge


def test_all_fail_problems_stop_at_min_samples_under_an_empirical_prior() -> None:
    rng = np.random.default_rng(3)
    p = np.where(rng.random(1_000) < 0.9, 0.0, rng.uniform(0.4, 0.9, 1_000))
    result = run_allocation(bernoulli(p, seed=3), p.size, STRATA, AllocationConfig(policy="adaptive", min_samples=4))
    never = result.successes == 0
    assert never.sum() >= 0.9 * (p == 0).sum()
    assert np.all(result.trials[never] == 4)
    assert set(result.stop_reasons[never]) == {"settled"}


def test_signal_objective_stops_all_pass_and_all_fail_problems_sooner_and_keeps_mixed_ones_going() -> None:
    p = mixed_pool(2_000, seed=4)
    runs = {
        objective: run_allocation(bernoulli(p, seed=4), p.size, STRATA, AllocationConfig(policy="adaptive", objective=objective))
        for objective in ("accuracy", "signal")
    }
    pure, mixed = (p == 0) | (p == 1), (p > 0.2) & (p < 0.8)
    accuracy, signal = runs["accuracy"].trials, runs["signal"].trials
    assert signal[pure].mean() < 0.5 * accuracy[pure].mean()
    assert signal[mixed].mean() > 0.8 * accuracy[mixed].mean()
    assert signal[mixed].mean() > 2 * signal[pure].mean()
    assert runs["signal"].total_rollouts < runs["accuracy"].total_rollouts
    assert "" not in set(runs["signal"].stop_reasons)


def test_run_allocation_is_deterministic_with_a_fixed_seed() -> None:
    p = mixed_pool(400, seed=5)
    config = AllocationConfig(policy="adaptive", total_budget=4_000)
    runs = [
        run_allocation(bernoulli(p, seed=7), p.size, STRATA, config, rng=np.random.default_rng(11))
        for _ in range(2)
    ]
    np.testing.assert_array_equal(runs[0].successes, runs[1].successes)
    np.testing.assert_array_equal(runs[0].trials, runs[1].trials)
    assert runs[0].round_rollouts == runs[1].round_rollouts


def test_adaptive_spends_less_than_its_cap_on_an_easy_pool() -> None:
    p = mixed_pool(500, seed=2)
    result = run_allocation(bernoulli(p), p.size, STRATA, AllocationConfig(policy="adaptive", max_samples=64))
    assert result.total_rollouts < 0.9 * 64 * p.size
    assert "" not in set(result.stop_reasons)


def test_run_allocation_rejects_impossible_sample_counts() -> None:
    with pytest.raises(ValueError, match="sample_fn"):
        run_allocation(lambda extra: extra + 1, 3, STRATA, AllocationConfig(policy="adaptive"))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"policy": "greedy"},
        {"objective": "precision"},
        {"min_samples": 0},
        {"min_samples": 8, "max_samples": 4},
        {"batch_per_problem": 0},
        {"confidence": 0.0},
        {"min_gain": -1.0},
        {"total_budget": -5},
    ],
)
def test_config_validation(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        AllocationConfig(**kwargs)


def test_a_pool_too_small_to_fit_uses_a_uniform_prior() -> None:
    # a uniform Beta has no mass on p == 1, so an always-passing problem is never "settled" as solved
    result = run_allocation(bernoulli(np.ones(3)), 3, STRATA, AllocationConfig(policy="adaptive", max_samples=16))
    assert result.trials.tolist() == [16, 16, 16]
    assert set(result.stop_reasons) == {"max_samples"}


PRIOR = BetaPrior(0.6, 0.6, solved_mass=0.15, unsolved_mass=0.35)


def prior_pool(size: int, seed: int) -> np.ndarray:
    """Pass rates drawn from PRIOR."""
    rng = np.random.default_rng(seed)
    u = rng.random(size)
    return np.where(u < PRIOR.unsolved_mass, 0.0,
                    np.where(u < PRIOR.unsolved_mass + PRIOR.solved_mass, 1.0, rng.beta(PRIOR.alpha, PRIOR.beta, size)))


@pytest.mark.parametrize("objective", ["signal", "accuracy"])
def test_expected_outcome_matches_a_simulated_pool(objective: str) -> None:
    config = AllocationConfig(policy="adaptive", objective=objective, max_samples=64, min_gain=0.002, prior=PRIOR)
    rollouts, score = expected_outcome(PRIOR, STRATA, config)
    p = prior_pool(20_000, seed=8)
    result = run_allocation(bernoulli(p, seed=8), p.size, STRATA, config)
    wrong = STRATA.observed_class(result.successes, result.trials) != STRATA.class_of(p)
    realised = 1.0 - wrong * (4 * p * (1 - p) if objective == "signal" else 1.0)
    trials_se = result.trials.std() / np.sqrt(p.size)
    assert abs(result.trials.mean() - rollouts) < 4 * trials_se
    assert abs(realised.mean() - score) < 4 * realised.std() / np.sqrt(p.size)


def test_expected_outcome_of_uniform_n_is_the_chance_its_counts_land_in_the_true_class() -> None:
    config = AllocationConfig(policy="uniform", samples_per_problem=16, objective="accuracy")
    rollouts, score = expected_outcome(PRIOR, STRATA, config)
    p = prior_pool(40_000, seed=9)
    right = STRATA.observed_class(np.random.default_rng(9).binomial(16, p), 16) == STRATA.class_of(p)
    assert rollouts == pytest.approx(16.0)
    assert abs(right.mean() - score) < 4 * right.std() / np.sqrt(p.size)


def test_the_rule_for_a_price_beats_every_other_rule_at_that_price() -> None:
    # min_gain is the price of a rollout; the backward-induction rule maximises score - price * rollouts
    price = 0.001

    def net(config: AllocationConfig) -> float:
        rollouts, score = expected_outcome(PRIOR, STRATA, config)
        return score - price * rollouts

    rule = AllocationConfig(policy="adaptive", max_samples=128, confidence=1.0, min_gain=price, prior=PRIOR)
    best = net(rule)
    others = [replace(rule, min_gain=price * f) for f in (0.25, 0.5, 2.0, 4.0)]
    others += [replace(rule, confidence=c) for c in (0.9, 0.95, 0.99)]
    others += [AllocationConfig(policy="uniform", samples_per_problem=n) for n in (4, 8, 16, 32, 64, 128)]
    assert max(net(other) for other in others) <= best + 1e-12
