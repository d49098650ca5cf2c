import numpy as np
import pandas as pd
import pytest

from pipeline.core.model import ModelSpec
from pipeline.difficulty.estimators import BetaPrior
from pipeline.difficulty.strata import Strata
from pipeline.engines.base import SamplingConfig
from pipeline.labels.history import LabelHistory
from pipeline.labels.pass_rates import LabelTarget, pass_rates_from_counts
from pipeline.rollouts.allocation import MIN_POOL_TO_FIT, AllocationConfig
from pipeline.labels.priors import (
    PriorSource,
    PriorSpec,
    SourcePriors,
    combined,
    fit_strengths,
    history_sources,
    label_source,
    prediction_source,
    relabel_allocation,
)

POOL = BetaPrior(0.7, 0.6, solved_mass=0.17, unsolved_mass=0.34)


def pool(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    kind = rng.choice(3, n, p=[0.34, 0.17, 0.49])
    return np.where(kind == 0, 0.0, np.where(kind == 1, 1.0, rng.beta(0.7, 0.6, n)))


def test_a_source_whose_labels_held_is_trusted_and_an_unrelated_one_is_dropped():
    rng = np.random.default_rng(0)
    p = pool(3000, 1)
    first = rng.binomial(4, p)
    held = PriorSource("held", rng.binomial(16, p).astype(float), np.full(p.size, 16.0))
    unrelated = PriorSource("unrelated", rng.binomial(16, pool(3000, 2)).astype(float), np.full(p.size, 16.0))
    strengths = fit_strengths(POOL, [held, unrelated], first, np.full(p.size, 4))
    assert strengths[0] > 100
    assert strengths[1] == 0.0


def test_a_source_that_moved_gets_a_strength_between():
    rng = np.random.default_rng(3)
    p = pool(3000, 4)
    moved = np.clip(p + rng.normal(0, 0.15, p.size), 0, 1)
    source = PriorSource("moved", rng.binomial(64, moved).astype(float), np.full(p.size, 64.0))
    (k,) = fit_strengths(POOL, [source], rng.binomial(4, p), np.full(p.size, 4))
    assert 1 < k < 40


def test_a_source_on_too_few_problems_is_not_used():
    labelled = np.zeros(200)
    labelled[:10] = 16.0
    source = PriorSource("few", labelled / 2, labelled)
    assert fit_strengths(POOL, [source], np.full(200, 2), np.full(200, 4)).tolist() == [0.0]


def test_discounting_caps_a_source_at_its_strength_and_sources_add():
    a = PriorSource("a", np.array([8.0, 0.0]), np.array([16.0, 0.0]))
    b = PriorSource("b", np.array([1.0, 3.0]), np.array([4.0, 4.0]))
    s, n = combined([a, b], [16.0, 4.0])
    assert n.tolist() == [16 * 16 / 32 + 4 * 4 / 8, 2.0]
    assert s.tolist() == [8 * 16 / 32 + 1 * 4 / 8, 1.5]


def test_a_prediction_is_worth_its_strength_and_unpredicted_problems_get_nothing():
    source = prediction_source("probe", [0.25, np.nan])
    s, n = combined([source], [10.0])
    assert n.round(3).tolist() == [10.0, 0.0] and s.round(3).tolist() == [2.5, 0.0]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        prediction_source("probe", [1.5])


def test_source_priors_name_their_sources_per_problem():
    rng = np.random.default_rng(5)
    p = pool(400, 6)
    first = rng.binomial(4, p)
    trials = np.full(p.size, 16.0)
    trials[:100] = 0.0
    make = SourcePriors([PriorSource("rev1", rng.binomial(16, p) * (trials > 0).astype(float), trials)])
    priors = make(first, np.full(p.size, 4))
    assert set(priors.source[:100]) == {""} and set(priors.source[100:]) == {"rev1"}
    assert priors.trials[:100].max() == 0.0 and priors.trials[100:].min() > 8
    assert make.summary().to_dict("records") == [{"source": "rev1", "problems": 300,
                                                  "strength": round(float(make.strengths[0]), 2)}]


def test_history_sources_are_the_newest_other_versions_newest_first(tmp_path):
    history = LabelHistory(tmp_path)
    ids = np.array(["a", "b", "c"])
    target = LabelTarget(ModelSpec("/m", "org/m", "r3"), SamplingConfig(), "v1")
    for revision, passes in (("r1", [0, 1, 2]), ("r2", [4, 3, 2]), ("r3", [4, 4, 4])):
        version = LabelTarget(ModelSpec("/m", "org/m", revision), SamplingConfig(), "v1")
        history.record(pass_rates_from_counts(ids, np.array(passes), np.full(3, 4), version), Strata())
    sources = history_sources(history, ["c", "a", "z"], target, max_sources=5)
    assert [s.name.split("/")[0] for s in sources] == ["org-m@r2", "org-m@r1"]
    assert sources[0].successes.tolist() == [2.0, 4.0, 0.0] and sources[0].trials.tolist() == [4.0, 4.0, 0.0]
    assert len(history_sources(history, ["a"], target, max_sources=1)) == 1


def test_label_source_keeps_the_pool_order():
    labels = pd.DataFrame({"problem_id": ["x", "y"], "successes": [1, 2], "trials": [4, 8]})
    source = label_source("l", labels, ["y", "q", "x"])
    assert source.successes.tolist() == [2.0, 0.0, 1.0] and source.trials.tolist() == [8.0, 0.0, 4.0]


def test_prior_spec_refuses_no_sources():
    with pytest.raises(ValueError, match="max_sources"):
        PriorSpec(max_sources=0)


def test_a_relabel_of_enough_labelled_problems_is_adaptive_under_their_priors(tmp_path):
    history = LabelHistory(tmp_path)
    base = LabelTarget(ModelSpec("/m", "org/m", "r1"), SamplingConfig(), "v1")
    checkpoint = LabelTarget(ModelSpec("/m", "org/m", "r2"), SamplingConfig(), "v1")
    uniform = AllocationConfig(samples_per_problem=16)
    ids = [f"p{i}" for i in range(MIN_POOL_TO_FIT + 10)]
    history.record(pass_rates_from_counts(np.array(ids), np.full(len(ids), 2), np.full(len(ids), 4), base), Strata())

    allocation, priors = relabel_allocation(uniform, PriorSpec(), history, ids, checkpoint)
    assert allocation.policy == "adaptive" and allocation.samples_per_problem == 16
    assert [s.name for s in priors.sources] == [base.key]
    # The target's own labels are no prior; without use_priors, or on problems the history barely
    # knows, the policy stays as configured.
    assert relabel_allocation(uniform, PriorSpec(), history, ids, base) == (uniform, None)
    assert relabel_allocation(uniform, PriorSpec(use_priors=False), history, ids, checkpoint) == (uniform, None)
    few = ids[:MIN_POOL_TO_FIT - 1] + [f"new{i}" for i in range(100)]
    assert relabel_allocation(uniform, PriorSpec(), history, few, checkpoint) == (uniform, None)


def test_a_probes_prediction_alone_makes_a_never_labelled_pool_a_relabel(tmp_path):
    history = LabelHistory(tmp_path)
    target = LabelTarget(ModelSpec("/m", "org/m", "r2"), SamplingConfig(), "v1")
    uniform = AllocationConfig(samples_per_problem=16)
    ids = [f"p{i}" for i in range(MIN_POOL_TO_FIT)]
    probe = prediction_source("probe of org-m@r1", np.linspace(0.1, 0.9, len(ids)))

    allocation, priors = relabel_allocation(uniform, PriorSpec(), history, ids, target, [probe])
    assert allocation.policy == "adaptive" and [s.name for s in priors.sources] == ["probe of org-m@r1"]
    sparse = prediction_source("probe", np.r_[np.full(MIN_POOL_TO_FIT - 1, 0.5), np.nan])
    assert relabel_allocation(uniform, PriorSpec(), history, ids, target, [sparse]) == (uniform, None)
