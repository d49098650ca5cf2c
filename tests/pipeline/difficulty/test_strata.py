from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.difficulty.strata import SOLVED, UNSOLVED, Strata


def test_default_strata_classes_and_labels() -> None:
    strata = Strata()
    assert strata.n_stages == 3
    assert strata.classes == (SOLVED, 1, 2, 3, UNSOLVED)
    assert list(strata.labels().values()) == ["solved", "stage_1", "stage_2", "stage_3", "unsolved"]


def test_stage_of_true_pass_rates_puts_edges_in_the_harder_bin() -> None:
    strata = Strata()  # (1, 0.5, 0.25, 0)
    rates = [1.0, 0.9, 0.5, 0.4, 0.25, 0.1, 0.0]
    assert strata.class_of(rates).tolist() == [SOLVED, 1, 2, 2, 3, 3, UNSOLVED]


def test_without_exclusions_the_ends_join_the_end_stages() -> None:
    strata = Strata(exclude_solved=False, exclude_unsolved=False)
    assert strata.classes == (1, 2, 3)
    assert strata.class_of([1.0, 0.0]).tolist() == [1, 3]


def test_counts_decide_solved_and_unsolved_for_smoothed_rates() -> None:
    strata = Strata()
    # posterior means never reach 0 or 1; the counts still say every / no trial passed
    assert strata.class_of([0.95, 0.02, 0.95], successes=[10, 0, 9], trials=[10, 10, 10]).tolist() == [
        SOLVED,
        UNSOLVED,
        1,
    ]


def test_observed_class_uses_s_over_n() -> None:
    strata = Strata()
    classes = strata.observed_class([1, 43, 64, 0, 1], [3, 64, 64, 64, 64])
    assert classes.tolist() == [2, 1, SOLVED, UNSOLVED, 3]


@pytest.mark.parametrize(
    ("edges", "message"),
    [
        ((1.0,), "at least 2 edges"),
        ((0.9, 0.5, 0.0), "start at 1 and end at 0"),
        ((1.0, 0.5, 0.1), "start at 1 and end at 0"),
        ((1.0, 0.3, 0.6, 0.0), "strictly descending"),
        ((1.0, 0.5, 0.5, 0.0), "strictly descending"),
        ((1.0, math.nan, 0.0), "finite"),
    ],
)
def test_from_edges_rejects_bad_edges(edges: tuple[float, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Strata.from_edges(edges)


def test_from_edges_accepts_any_sequence() -> None:
    strata = Strata.from_edges([1, 0.5, 0], exclude_unsolved=False)
    assert strata.edges == (1.0, 0.5, 0.0)
    assert strata.classes == (SOLVED, 1, 2)


def test_stage_of_rejects_bad_input() -> None:
    strata = Strata()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        strata.class_of([1.2])
    with pytest.raises(ValueError, match="no trials"):
        strata.observed_class([0], [0])
    with pytest.raises(ValueError, match="both"):
        strata.class_of([0.5], successes=[1])


def test_stage_of_is_vectorised() -> None:
    rates = np.random.default_rng(0).random((4, 5))
    assert Strata().class_of(rates).shape == (4, 5)
