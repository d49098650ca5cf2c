"""Informative GRPO groups: the label-based probability against enumeration and simulation, and the
count over real reward frames."""

import math
from itertools import product

import numpy as np
import pandas as pd
import pytest

from pipeline.curriculum.informative import (
    expected_informative,
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
