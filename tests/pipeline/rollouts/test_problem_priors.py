import numpy as np
import pytest

from pipeline.difficulty.estimators import BetaPrior
from pipeline.difficulty.strata import Strata
from pipeline.rollouts.allocation import (
    PRIOR_RATE_STEPS,
    PRIOR_STRENGTHS,
    AllocationConfig,
    ProblemPriors,
    plan_round,
    run_allocation,
)

POOL = BetaPrior(0.7, 0.6, solved_mass=0.17, unsolved_mass=0.34)
ADAPTIVE = AllocationConfig(policy="adaptive", prior=POOL)


def streams(p: np.ndarray, seed: int = 0, depth: int = 256) -> np.ndarray:
    return np.random.default_rng(seed).random((p.size, depth)) < p[:, None]


def sampler(outcomes: np.ndarray):
    """Common random numbers: problem i's k-th rollout is outcomes[i, k] whatever the policy."""
    done = np.zeros(len(outcomes), dtype=np.int64)

    def sample(extra: np.ndarray) -> np.ndarray:
        got = np.array([outcomes[i, done[i]:done[i] + extra[i]].sum() for i in range(len(outcomes))])
        done[:] += extra
        return got

    return sample


def test_priors_are_rounded_to_a_bounded_grid_keeping_exact_ends():
    rng = np.random.default_rng(0)
    n = rng.uniform(0, 300, 100_000)
    s = n * rng.uniform(0, 1, n.size)
    s[:10], s[10:20] = 0.0, n[10:20]  # all-fail and all-pass evidence
    priors = ProblemPriors(POOL, s, n)
    pairs, _ = priors.groups()
    assert pairs.shape[1] <= len(PRIOR_STRENGTHS) * (PRIOR_RATE_STEPS + 1)
    assert set(np.unique(priors.trials)) <= set(PRIOR_STRENGTHS)
    assert np.all(priors.successes[:10] == 0) and np.all(priors.successes[10:20] == priors.trials[10:20])
    # 1 pass in 20 is evidence of some passing: it must not round to all-fail (that adds unsolved mass).
    rounded = ProblemPriors(POOL, np.array([1.0]), np.array([20.0]))
    assert (rounded.successes.tolist(), rounded.trials.tolist()) == ([24 / PRIOR_RATE_STEPS], [24.0])


def test_a_first_round_that_contradicts_the_prior_continues_exactly_as_under_the_pool_prior():
    # Problem 0's prior says "never solved" (0 of 64); its first 4 rollouts all pass.
    p = np.array([1.0, 0.5, 0.0])
    outcomes = streams(p)
    outcomes[0] = True
    priors = ProblemPriors(POOL, np.array([0.0, 32.0, 0.0]), np.array([64.0, 64.0, 64.0]))
    with_priors = run_allocation(sampler(outcomes), 3, Strata(), ADAPTIVE, priors=lambda s, n: priors)
    pool_only = run_allocation(sampler(outcomes), 3, Strata(), ADAPTIVE)
    assert with_priors.priors.rejected.tolist() == [True, False, False]
    assert with_priors.trials[0] == pool_only.trials[0]
    assert with_priors.successes[0] == pool_only.successes[0] == pool_only.trials[0]
    # The agreeing prior on the never-solved problem stops it at the first round.
    assert with_priors.trials[2] == 4 < pool_only.trials[2]


def test_labels_come_from_counts_whatever_the_prior():
    # A confident, wrong prior (16 of 16 passed) on problems that never pass: rejected after the
    # first round, and labelled unsolved from their own counts.
    p = np.zeros(60)
    priors = ProblemPriors(POOL, np.full(60, 64.0), np.full(60, 64.0))
    result = run_allocation(sampler(streams(p)), 60, Strata(), ADAPTIVE, priors=lambda s, n: priors)
    assert result.priors.rejected.all()
    names = Strata().labels()
    assert {names[int(c)] for c in Strata().observed_class(result.successes, result.trials)} == {"unsolved"}


def test_plan_round_uses_each_problems_own_prior():
    # Same counts (0 of 4), different priors: the one whose prior agrees stops, the uninformed continues.
    priors = ProblemPriors(POOL, np.array([0.0, 0.0]), np.array([64.0, 0.0]))
    extra = plan_round(np.array([0, 0]), np.array([4, 4]), Strata(), ADAPTIVE, priors=priors)
    assert extra.tolist() == [0, 4]


def test_priors_of_known_quality_save_rollouts_without_losing_weighted_agreement():
    rng = np.random.default_rng(1)
    n = 1000
    kind = rng.choice(3, n, p=[0.34, 0.17, 0.49])
    p = np.where(kind == 0, 0.0, np.where(kind == 1, 1.0, rng.beta(0.7, 0.6, n)))
    old = rng.binomial(16, p).astype(float)  # the same pass rates, measured before with 16 rollouts
    priors = ProblemPriors(POOL, old, np.full(n, 16.0))
    outcomes = streams(p, seed=2)
    informed = run_allocation(sampler(outcomes), n, Strata(), ADAPTIVE, priors=lambda s, t: priors)
    pooled = run_allocation(sampler(outcomes), n, Strata(), ADAPTIVE)
    signal = p * (1 - p)

    def weighted(result) -> float:
        right = Strata().observed_class(result.successes, result.trials) == Strata().class_of(p)
        return float((right * signal).sum() / signal.sum())

    assert informed.total_rollouts < 0.7 * pooled.total_rollouts
    assert weighted(informed) >= weighted(pooled) - 0.005


@pytest.mark.parametrize("bad", [dict(successes=np.array([2.0]), trials=np.array([1.0])),
                                 dict(successes=np.array([0.0, 1.0]), trials=np.array([1.0]))])
def test_bad_pseudo_counts_are_refused(bad):
    with pytest.raises(ValueError, match="pseudo-counts"):
        ProblemPriors(POOL, **bad)
