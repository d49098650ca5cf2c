"""Informative GRPO groups: the label-based probability against enumeration and simulation, and the
count over real reward frames."""

import math
from itertools import product

import numpy as np
import pandas as pd
import pytest

from pipeline.curriculum.informative import (
    GroupFilter,
    expected_informative,
    generation_batch_size,
    informative_probability,
    measured_informative,
    pool_versus_curriculum,
)


@pytest.mark.parametrize("p,G", [(0.0, 2), (1.0, 4), (0.25, 2), (0.5, 4), (0.1, 5)])
def test_the_probability_matches_enumerating_every_group(p, G):
    mixed = sum(p ** sum(g) * (1 - p) ** (G - sum(g)) for g in product((0, 1), repeat=G) if 0 < sum(g) < G)
    assert informative_probability(p, G) == pytest.approx(mixed)


def test_the_expected_fraction_matches_simulated_groups():
    rng = np.random.default_rng(0)
    rates = np.array([0.0, 0.05, 0.3, 0.6, 1.0])
    groups = rng.random((20_000, rates.size, 4)) < rates[None, :, None]
    simulated = (groups.any(axis=2) & ~groups.all(axis=2)).mean()
    assert expected_informative(rates, 4).fraction == pytest.approx(simulated, abs=0.01)


def test_measured_groups_are_consecutive_samples_and_drop_a_partial_group():
    rewards = pd.DataFrame({
        "problem_id": ["a"] * 5 + ["b"] * 4,
        "sample_index": [4, 0, 1, 2, 3, 0, 1, 2, 3],
        "passed": [True, False, False, True, True, True, True, True, True],
    })
    # a: samples 0,1 fail, 2,3 pass -> groups (0,1) uniform, (2,3) uniform; sample 4 is a partial group
    # b: both groups all pass
    assert measured_informative(rewards, 2).fraction == 0.0
    # groups of 4: a's (0..3) mixes outcomes, b's does not
    four = measured_informative(rewards, 4)
    assert (four.fraction, four.groups, four.rollouts_per_informative_group) == (0.5, 2.0, 8.0)
    assert math.isinf(measured_informative(rewards.iloc[:0], 2).rollouts_per_informative_group)


def test_a_curriculum_without_solved_or_unsolved_problems_wastes_fewer_groups():
    rates = np.array([0.0, 0.0, 0.0, 1.0, 0.5, 0.25])
    staged = (rates > 0) & (rates < 1)
    figures = pool_versus_curriculum(rates, staged, 4)
    pool = informative_probability(rates, 4).mean()
    curriculum = informative_probability(rates[staged], 4).mean()
    assert figures["pool"]["fraction"] == round(pool, 4)
    assert figures["curriculum"]["fraction"] == round(curriculum, 4)
    assert figures["ratio"] == round(curriculum / pool, 3) and figures["ratio"] == pytest.approx(3.0)
    assert figures["curriculum"]["rollouts_per_informative_group"] == round(4 / curriculum, 2)


def test_groups_need_two_completions():
    with pytest.raises(ValueError, match="at least 2"):
        informative_probability([0.5], 1)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        informative_probability([1.5], 2)


# --- what a trainer's group filter keeps (verl DAPO filter_groups, OpenRLHF dynamic filtering) ---


@pytest.mark.parametrize("fraction,batch,expected", [
    # P(at least 1 of N survives) = 1 - 0.5^N: N=4 gives 0.9375, N=5 0.96875.
    (0.5, 1, 5),
    # P(at least 2 of N) = 1 - (N + 1) / 2^N: N=7 gives 0.9375, N=8 1 - 9/256 = 0.96484.
    (0.5, 2, 8),
    # 1 - 0.5625^N - N 0.4375 0.5625^(N-1): N=8 gives 0.9276, N=9 0.9549.
    (0.4375, 2, 9),
    (1.0, 3, 3),
    (0.0, 3, None),
])
def test_generation_batch_size_is_the_least_that_fills_the_batch_95_percent_of_the_time(fraction, batch, expected):
    assert generation_batch_size(fraction, batch) == expected


def test_a_stages_prediction_by_hand():
    # G = 2: a problem survives with 2p(1-p): 0.5 at p=1/2, 0.375 at p=1/4; mean 0.4375.
    # Intervals [0.3, 0.7] and [0.1, 0.4]: least 2*0.3*0.7=0.42 and 2*0.1*0.9=0.18 (mean 0.30), most
    # 0.5 (1/2 inside) and 2*0.4*0.6=0.48 (mean 0.49).
    got = GroupFilter(2, 2).prediction([0.5, 0.25], [0.3, 0.1], [0.7, 0.4])
    assert got == {"group_size": 2, "train_batch_size": 2, "confidence": 0.95, "surviving_fraction": 0.4375,
                   "surviving_fraction_range": [0.3, 0.49], "generation_batch_size": 9,
                   "generation_batch_size_at_low": 14}
    # G = 4: 1 - 2/16 = 0.875 and 1 - (1 + 81)/256 = 0.6796875; mean 0.77734375; N = 2 gives
    # 1 - 0.22265625^2 = 0.9504.
    assert GroupFilter(4, 1).prediction([0.5, 0.25], [0.5, 0.25], [0.5, 0.25])["generation_batch_size"] == 2
    assert GroupFilter(4, 1).prediction([0.5, 0.25], [0.5, 0.25], [0.5, 0.25])["surviving_fraction"] == 0.7773


def test_the_bound_is_exact_against_simulated_generation_batches():
    rng = np.random.default_rng(1)
    n = generation_batch_size(0.3, 16)
    survivors = (rng.random((20_000, n)) < 0.3).sum(axis=1)
    assert (survivors >= 16).mean() >= 0.94
    assert ((rng.random((20_000, n - 1)) < 0.3).sum(axis=1) >= 16).mean() < 0.955


@pytest.mark.parametrize("kwargs", [dict(group_size=1, train_batch_size=4), dict(group_size=4, train_batch_size=0),
                                    dict(group_size=4, train_batch_size=4, confidence=1.0)])
def test_a_group_filter_refuses_impossible_settings(kwargs):
    with pytest.raises(ValueError):
        GroupFilter(**kwargs)
