"""Difficulty probes on synthetic features with a planted signal."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import skops.io
from scipy.special import expit
from scipy.stats import spearmanr

from pipeline.probes import persistence
from pipeline.probes import probe as probe_module
from pipeline.probes.persistence import SKOPS_TRUSTED_TYPES, load_probe, save_probe
from pipeline.probes.probe import (
    ProbeConfig,
    fit_probe,
    predict,
    probe_figures,
    probe_passes,
    select_for_rollouts,
)

LAYERS = (4, 8, 12)
SIGNAL_LAYER = 8
TRIALS = 16


def planted(n: int, seed: int, hidden: int = 48) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features whose layer 8 holds a linear logit of the pass rate; the other layers are noise."""
    rng = np.random.default_rng(seed)
    direction = np.random.default_rng(99).normal(size=hidden)
    features = rng.normal(size=(n, len(LAYERS), hidden)).astype(np.float32)
    logit = features[:, LAYERS.index(SIGNAL_LAYER)] @ direction / np.sqrt(hidden) * 2.5 - 0.5
    pass_rate = rng.binomial(TRIALS, expit(logit)) / TRIALS
    groups = np.array([f"gen{i % 7}" for i in range(n)])
    return features, pass_rate, groups


@pytest.fixture(scope="module")
def ridge_probe() -> probe_module.ProbeReport:
    features, pass_rate, groups = planted(200, seed=1)
    return fit_probe(
        features, pass_rate, TRIALS, groups, LAYERS,
        problem_ids=[f"p{i}" for i in range(200)], model_key="test/model@r1",
    )


def test_recovers_planted_signal_on_held_out_problems(ridge_probe: probe_module.ProbeReport) -> None:
    assert ridge_probe.chosen_layer == SIGNAL_LAYER
    assert ridge_probe.spearman > 0.8
    assert ridge_probe.metrics["auroc"] > 0.8
    features, pass_rate, _ = planted(300, seed=2)
    pred, uncertainty = predict(ridge_probe, features)
    assert spearmanr(pred, pass_rate).statistic > 0.8
    assert ((pred >= 0) & (pred <= 1)).all() and (uncertainty > 0).all()
    scores = ridge_probe.layer_scores.set_index("layer")["spearman"]
    assert scores[SIGNAL_LAYER] > 0.8 and abs(scores[4]) < 0.3
    calibration = ridge_probe.calibration
    assert calibration["count"].sum() == 200
    assert calibration["mean_measured"].is_monotonic_increasing


def test_provenance_hash_depends_on_labels_not_order() -> None:
    features, pass_rate, groups = planted(40, seed=3)
    ids = [f"p{i}" for i in range(40)]
    config = ProbeConfig(layers=(SIGNAL_LAYER,))
    a = fit_probe(features, pass_rate, TRIALS, groups, LAYERS, config, problem_ids=ids)
    order = np.arange(40)[::-1]
    b = fit_probe(features[order], pass_rate[order], TRIALS, groups[order], LAYERS, config,
                  problem_ids=[ids[i] for i in order])
    flipped = pass_rate.copy()
    flipped[0] = 1 - flipped[0]
    c = fit_probe(features, flipped, TRIALS, groups, LAYERS, config, problem_ids=ids)
    assert a.provenance["training_set_hash"] == b.provenance["training_set_hash"]
    assert a.provenance["training_set_hash"] != c.provenance["training_set_hash"]


def test_grouped_cv_does_not_reward_memorised_groups() -> None:
    """Each group's problems are near-duplicates sharing one random pass rate: an ungrouped split
    lets the probe look them up, a grouped one must generalise to unseen groups (and cannot)."""
    rng = np.random.default_rng(4)
    n_groups, per_group, hidden = 30, 6, 24
    centres = rng.normal(size=(n_groups, hidden)) * 3
    group_rate = rng.uniform(0.05, 0.95, n_groups)
    group_of = np.repeat(np.arange(n_groups), per_group)
    features = (centres[group_of] + rng.normal(size=(len(group_of), hidden)) * 0.1)[:, None, :]
    pass_rate = rng.binomial(TRIALS, group_rate[group_of]) / TRIALS
    groups = np.array([f"g{g}" for g in group_of])
    grouped = fit_probe(features, pass_rate, TRIALS, groups, (1,))
    ungrouped = fit_probe(features, pass_rate, TRIALS, np.arange(len(groups)).astype(str), (1,))
    assert ungrouped.spearman > 0.6
    assert grouped.spearman < 0.3
    assert not probe_passes(grouped)[0]


def test_cv_falls_back_with_few_groups() -> None:
    features, pass_rate, _ = planted(60, seed=5)
    config = ProbeConfig(layers=(SIGNAL_LAYER,))
    three = fit_probe(features, pass_rate, TRIALS, np.array(["a", "b", "c"] * 20), LAYERS, config)
    assert three.metrics["n_folds"] == 3 and "leave-one-group-out" in three.notes[0]
    one = fit_probe(features, pass_rate, TRIALS, np.array(["a"] * 60), LAYERS, config)
    assert one.metrics["n_folds"] == 5 and "ungrouped" in one.notes[0]
    assert "ungrouped" in probe_passes(one)[1]


def test_blocking_rule_rejects_noise() -> None:
    features, _, groups = planted(200, seed=6)
    noise = np.random.default_rng(7).binomial(TRIALS, 0.4, 200) / TRIALS
    report = fit_probe(features, noise, TRIALS, groups, LAYERS)
    ok, reason = probe_passes(report)
    assert not ok and "< floor 0.300" in reason
    constant = fit_probe(features, np.zeros(200), TRIALS, groups, LAYERS)
    ok, reason = probe_passes(constant)
    assert not ok and "undefined" in reason


def test_ridge_round_trip_is_exact_and_pickle_free(ridge_probe: probe_module.ProbeReport, tmp_path: Path) -> None:
    folder = save_probe(ridge_probe, tmp_path / "probe")
    assert sorted(p.name for p in folder.iterdir()) == ["probe.json", "probe.npz"]
    with np.load(folder / "probe.npz", allow_pickle=False) as npz:
        assert {"mean", "scale", "coef", "intercept"} <= set(npz.files)
    loaded = load_probe(folder)
    features, _, _ = planted(50, seed=8)
    for got, want in zip(predict(loaded, features), predict(ridge_probe, features)):
        np.testing.assert_array_equal(got, want)
    assert loaded.chosen_layer == ridge_probe.chosen_layer
    assert loaded.provenance == ridge_probe.provenance
    assert loaded.metrics == pytest.approx(ridge_probe.metrics, nan_ok=True)
    assert probe_passes(loaded) == probe_passes(ridge_probe)


def test_logistic_round_trip(tmp_path: Path) -> None:
    features, pass_rate, groups = planted(120, seed=9)
    report = fit_probe(features, pass_rate, TRIALS, groups, LAYERS,
                       ProbeConfig(kind="logistic", layers=(SIGNAL_LAYER,), alphas=(1.0, 100.0)))
    assert report.metrics["auroc"] > 0.75 and report.residual_sd == 0.0
    loaded = load_probe(save_probe(report, tmp_path))
    for got, want in zip(predict(loaded, features), predict(report, features)):
        np.testing.assert_array_equal(got, want)


def test_tree_probe_round_trip_trusts_only_listed_types(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    features, pass_rate, groups = planted(100, seed=10, hidden=8)
    report = fit_probe(features, pass_rate, TRIALS, groups, LAYERS,
                       ProbeConfig(kind="hist_gbt", layers=(SIGNAL_LAYER,), cv_folds=3))
    folder = save_probe(report, tmp_path)
    untrusted = skops.io.get_untrusted_types(file=folder / "model.skops")
    assert set(untrusted) <= set(SKOPS_TRUSTED_TYPES)
    assert zipfile.is_zipfile(folder / "model.skops")  # skops' JSON-in-zip format, not a pickle
    loaded = load_probe(folder)
    for got, want in zip(predict(loaded, features), predict(report, features)):
        np.testing.assert_array_equal(got, want)
    monkeypatch.setattr(persistence, "SKOPS_TRUSTED_TYPES", ())
    with pytest.raises(ValueError, match="trusted list"):
        load_probe(folder)


def test_predict_checks_feature_shape(ridge_probe: probe_module.ProbeReport) -> None:
    with pytest.raises(ValueError):
        predict(ridge_probe, np.zeros((3, 2, 48), dtype=np.float32))


def test_predict_from_the_chosen_layer_alone(ridge_probe: probe_module.ProbeReport) -> None:
    features, _, _ = planted(20, seed=3)
    chosen = features[:, [LAYERS.index(ridge_probe.chosen_layer)], :]
    for got, want in zip(predict(ridge_probe, chosen), predict(ridge_probe, features)):
        np.testing.assert_array_equal(got, want)


def test_select_for_rollouts_prefers_doubt_near_boundaries() -> None:
    pred = np.array([0.50, 0.34, 0.90, 0.10, 0.66, 0.20])
    unc = np.array([0.05, 0.05, 0.05, 0.30, 0.01, 0.01])
    edges = (1.0, 2 / 3, 1 / 3, 0.0)
    # 0.34 is 0.007 from 1/3 with +-0.05; 0.66 is 0.007 from 2/3 with +-0.01; 0.10 is 0.1 from 0
    # with +-0.3; 0.50 and 0.20 sit mid-stratum; 0.90 is 0.1 from 1 with +-0.05.
    assert select_for_rollouts(pred, unc, edges, 3).tolist() == [1, 3, 4]
    assert select_for_rollouts(pred, unc, edges[1:-1], 2).tolist() == [1, 4]
    assert select_for_rollouts(pred, unc, (), 2).tolist() == [3, 0]
    assert select_for_rollouts(pred, unc, edges, 0).size == 0
    assert sorted(select_for_rollouts(pred, unc, edges, 99).tolist()) == list(range(6))


def test_figures_are_pngs(ridge_probe: probe_module.ProbeReport) -> None:
    figures = probe_figures(ridge_probe)
    assert set(figures) == {"predicted_vs_measured.png", "layer_scores.png"}
    assert all(png.startswith(b"\x89PNG") for png in figures.values())


def test_merge_labels_prefers_measured_and_gives_predictions_counts_of_the_measured_budget() -> None:
    import pandas as pd

    from pipeline.curriculum.labels import merge_labels
    from pipeline.difficulty.strata import Strata

    measured = pd.DataFrame({"problem_id": ["a", "b"], "successes": [3, 0], "trials": [8, 8],
                             "pass_rate": [3 / 8, 0.0], "ci_low": [0.1, 0.0], "ci_high": [0.7, 0.2]})
    rates = [0.9, 0.03, 0.07, 0.5, 0.97]
    predicted = pd.DataFrame({"problem_id": ["a", "c", "d", "e", "f"], "pass_rate": rates,
                              "ci_low": [0.0] * 5, "ci_high": [1.0] * 5})
    both = merge_labels(measured, predicted).set_index("problem_id")
    assert list(both.index) == ["a", "b", "c", "d", "e", "f"]
    assert both.loc["a", "pass_rate"] == 3 / 8 and both.loc["a", "label_source"] == "measured"
    guessed = both[both["label_source"] == "predicted"]
    assert (guessed["trials"] == 8).all()
    assert guessed["successes"].tolist() == [round(p * 8) for p in rates[1:]]
    # 0.03 < 1/16 rounds to no success: never solved, like a measured 0/8; 0.97 >= 15/16 always solved.
    classes = Strata().class_of(both["pass_rate"], both["successes"], both["trials"])
    assert dict(zip(both.index, classes)) == {"a": 2, "b": -1, "c": -1, "d": 3, "e": 2, "f": 0}

    only_predicted = merge_labels(None, predicted, trials=4)
    assert set(only_predicted["label_source"]) == {"predicted"} and (only_predicted["trials"] == 4).all()
    only_measured = merge_labels(measured, None)
    assert set(only_measured["label_source"]) == {"measured"} and len(only_measured) == 2
    with pytest.raises(ValueError, match="need `trials`"):
        merge_labels(None, predicted)
    assert merge_labels(None, None).empty
