from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import special, stats

from pipeline.difficulty.estimators import (
    BetaPrior,
    class_index,
    credible_interval,
    log_marginal,
    pass_at_k,
    posterior_mean,
    posterior_weights,
    stratum_probabilities,
    stratum_signal,
)
from pipeline.difficulty.strata import Strata

S = np.array([0, 3, 7, 10, 0, 5])
N = np.array([10, 10, 10, 10, 0, 64])


def test_posterior_mean_matches_the_conjugate_beta() -> None:
    prior = BetaPrior(2.0, 3.0)
    expected = stats.beta.mean(prior.alpha + S, prior.beta + N - S)
    np.testing.assert_allclose(posterior_mean(S, N, prior), expected)
    assert posterior_mean(3, 10) == pytest.approx(4 / 12)  # uniform prior: (s + 1) / (n + 2)


def test_posterior_mean_with_point_masses_by_hand() -> None:
    # One pass under half mass on p == 1 and a uniform rest: evidence 1/2 vs 1/2 * 1/2, so
    # P(p == 1) = 2/3 and the Beta(2, 1) part (mean 2/3) has 1/3.
    prior = BetaPrior(1.0, 1.0, solved_mass=0.5)
    assert posterior_mean(1, 1, prior) == pytest.approx(2 / 3 + 1 / 3 * 2 / 3)
    w_zero, w_beta, w_one = posterior_weights(1, 1, prior)
    assert (w_zero, w_beta, w_one) == pytest.approx((0.0, 1 / 3, 2 / 3))


def test_credible_interval_matches_beta_ppf_and_contains_the_mean() -> None:
    prior = BetaPrior(0.5, 0.5)
    lo, hi = credible_interval(S, N, prior, level=0.9)
    a, b = prior.alpha + S, prior.beta + N - S
    np.testing.assert_allclose(lo, stats.beta.ppf(0.05, a, b))
    np.testing.assert_allclose(hi, stats.beta.ppf(0.95, a, b))
    mean = posterior_mean(S, N, prior)
    assert np.all((lo <= mean) & (mean <= hi))
    wide_lo, wide_hi = credible_interval(S, N, prior, level=0.99)
    assert np.all((wide_lo <= lo) & (hi <= wide_hi))
    assert credible_interval(0, 0, level=0.9) == pytest.approx((0.05, 0.95))


def test_credible_interval_with_point_masses_is_a_mixture_quantile() -> None:
    prior = BetaPrior(0.6, 0.6, solved_mass=0.15, unsolved_mass=0.35)
    lo, hi = credible_interval(S, N, prior, level=0.8)
    w_zero, w_beta, w_one = posterior_weights(S, N, prior)
    a, b = prior.alpha + S, prior.beta + N - S

    def cdf(x: np.ndarray) -> np.ndarray:
        return w_zero + w_beta * stats.beta.cdf(x, a, b) + w_one * (x >= 1)

    for q, x in ((0.1, lo), (0.9, hi)):  # x is the smallest point where the CDF reaches q
        assert np.all(cdf(x) >= q - 1e-9)
        assert np.all(np.where(x > 0, cdf(np.maximum(x - 1e-7, 0)), -np.inf) <= q + 1e-6)
    assert lo[0] == 0.0  # 0/10 is mostly the p == 0 mass
    assert hi[3] == 1.0  # 10/10 is mostly the p == 1 mass
    mean = posterior_mean(S, N, prior)
    assert np.all((lo <= mean) & (mean <= hi))


def test_pass_at_k_matches_enumeration_of_k_subsets() -> None:
    for n in range(1, 8):
        for c in range(n + 1):
            outcomes = [1] * c + [0] * (n - c)
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(outcomes, k))
                brute = sum(any(sub) for sub in subsets) / len(subsets)
                assert pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12)


def test_pass_at_k_is_vectorised_and_stable_for_large_n() -> None:
    n = np.array([1000, 1000, 1000, 200])
    c = np.array([1, 0, 600, 1])
    np.testing.assert_allclose(pass_at_k(n, c, [500, 500, 500, 1]), [0.5, 0.0, 1.0, 1 / 200])
    np.testing.assert_allclose(pass_at_k(n, c, 1), c / n)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_fit_pool_recovers_a_planted_beta() -> None:
    rng = np.random.default_rng(0)
    p = rng.beta(2.0, 5.0, 20_000)
    trials = np.full(p.size, 20)
    prior = BetaPrior.fit_pool(rng.binomial(trials, p), trials, point_masses=False)
    assert prior.alpha == pytest.approx(2.0, rel=0.1)
    assert prior.beta == pytest.approx(5.0, rel=0.1)


def test_fit_pool_recovers_planted_point_masses() -> None:
    rng = np.random.default_rng(1)
    u = rng.random(20_000)
    p = np.where(u < 0.35, 0.0, np.where(u < 0.5, 1.0, rng.beta(0.6, 0.6, u.size)))
    trials = rng.choice([16, 32, 64], u.size)
    successes = rng.binomial(trials, p)
    successes[:100] = trials[:100] = 0  # unsampled problems carry no information
    prior = BetaPrior.fit_pool(successes, trials)
    assert prior.unsolved_mass == pytest.approx(0.35, abs=0.02)
    assert prior.solved_mass == pytest.approx(0.15, abs=0.02)
    assert prior.alpha == pytest.approx(0.6, rel=0.15)
    assert prior.beta == pytest.approx(0.6, rel=0.15)


def test_fit_pool_stays_sane_on_degenerate_pools() -> None:
    never = BetaPrior.fit_pool(np.zeros(50, dtype=int), np.full(50, 8))
    assert never.unsolved_mass > 0.9
    always = BetaPrior.fit_pool(np.full(50, 8), np.full(50, 8), point_masses=False)
    assert 0.02 <= always.beta <= always.alpha <= 100
    with pytest.raises(ValueError, match="no trials"):
        BetaPrior.fit_pool([0, 0], [0, 0])


def test_prior_validation() -> None:
    with pytest.raises(ValueError):
        BetaPrior(0.0, 1.0)
    with pytest.raises(ValueError):
        BetaPrior(solved_mass=0.6, unsolved_mass=0.4)


def test_predictive_from_log_marginal_sums_to_one() -> None:
    prior = BetaPrior(0.6, 0.9, solved_mass=0.1, unsolved_mass=0.3)
    for s, n, h in [(0, 4, 4), (3, 8, 12), (5, 5, 1), (0, 0, 6)]:
        j = np.arange(h + 1)
        log_choose = special.gammaln(h + 1) - special.gammaln(j + 1) - special.gammaln(h - j + 1)
        pmf = np.exp(log_choose + log_marginal(s + j, n + h, prior) - log_marginal(s, n, prior))
        assert pmf.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("exclude", [True, False])
def test_stratum_probabilities_sum_to_one(exclude: bool) -> None:
    strata = Strata(exclude_solved=exclude, exclude_unsolved=exclude)
    prior = BetaPrior(0.6, 0.6, solved_mass=0.15, unsolved_mass=0.35)
    probs = stratum_probabilities(S, N, prior, strata)
    assert probs.shape == (S.size, len(strata.classes))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)


def test_stratum_probabilities_of_a_plain_beta() -> None:
    strata = Strata()
    prior = BetaPrior(1.0, 1.0)
    probs = stratum_probabilities(3, 10, prior, strata)[0]
    # no point masses: solved and unsolved have probability 0, stages are Beta(4, 8) bin masses
    cdf = stats.beta.cdf(strata.edges, 4, 8)
    np.testing.assert_allclose(probs, [0.0, cdf[0] - cdf[1], cdf[1] - cdf[2], cdf[2] - cdf[3], 0.0])
    with_masses = stratum_probabilities(0, 10, BetaPrior(1.0, 1.0, unsolved_mass=0.5), strata)[0]
    assert with_masses[class_index(strata, -1)] == pytest.approx(0.5 / (0.5 + 0.5 / 11))


@pytest.mark.parametrize("exclude", [True, False])
def test_stratum_signal_is_p_times_1_minus_p_integrated_over_each_class(exclude: bool) -> None:
    # Edges off the integration grid: an edge on a grid point would be split between two bins.
    strata = Strata((1.0, 2 / 3, 1 / 3, 0.0), exclude_solved=exclude, exclude_unsolved=exclude)
    prior = BetaPrior(0.6, 0.6, solved_mass=0.15, unsolved_mass=0.35)
    signal = stratum_signal(S, N, prior, strata)
    # numerically: the Beta part's posterior weight times the integral of p(1-p) x its density per bin
    grid = np.linspace(0, 1, 200_001)[1:-1]
    _, w_beta, _ = posterior_weights(S, N, prior)
    density = stats.beta.pdf(grid[:, None], prior.alpha + S, prior.beta + N - S)
    integrand = grid[:, None] * (1 - grid[:, None]) * density * w_beta
    bins = strata.class_of(grid)
    expected = np.stack(
        [np.trapezoid(np.where((bins == c)[:, None], integrand, 0.0), grid, axis=0) for c in strata.classes], axis=1
    )
    np.testing.assert_allclose(signal, expected, atol=1e-6)
    if exclude:  # the point masses at p = 0 and 1 carry no signal
        np.testing.assert_array_equal(signal[:, [0, -1]], 0.0)


def test_class_index() -> None:
    strata = Strata()
    assert class_index(strata, [0, 1, 3, -1]).tolist() == [0, 1, 3, 4]
    with pytest.raises(ValueError):
        class_index(Strata(exclude_solved=False), [0])


def test_updated_prior_is_the_posterior_and_takes_fractional_counts():
    prior = BetaPrior(0.5, 1.5, solved_mass=0.2, unsolved_mass=0.3)
    assert prior.updated(0, 0) == prior
    failed = prior.updated(0, 16)
    assert (failed.alpha, failed.beta, failed.solved_mass) == (0.5, 17.5, 0.0)
    # The p == 0 mass's posterior weight, as posterior_weights gives it for 0 of 16.
    assert failed.unsolved_mass == pytest.approx(float(posterior_weights(0, 16, prior)[0]))
    half = prior.updated(3.5, 8.0)
    assert (half.alpha, half.beta, half.solved_mass, half.unsolved_mass) == (4.0, 6.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="successes <= trials"):
        prior.updated(3.0, 2.0)
