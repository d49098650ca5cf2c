"""`difficulty_matrix` on a label history where two models' labels exist."""

import json

import pandas as pd
from dagster import materialize

from assets.deployment import resources
from assets.history import difficulty_matrix
from assets.metadata import picture_key
from assets.resources import TargetModel
from pipeline.core.model import write_marker
from pipeline.difficulty.strata import Strata
from pipeline.labels.history import LabelHistory
from pipeline.labels.pass_rates import pass_rates


def model_folder(path, model_id, revision):
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    write_marker(path, model_id, revision)
    return str(path)


def test_the_matrix_puts_two_models_side_by_side_and_plots_the_target_against_the_other(tmp_path):
    home = tmp_path / "home"
    smol = TargetModel(model_path=model_folder(tmp_path / "smol", "smol", "r1"))
    gemma = TargetModel(model_path=model_folder(tmp_path / "gemma", "gemma", "g1"))
    history = LabelHistory(home)
    for target, outcomes in ((smol, {"a": [True, False], "b": [False, False]}),
                             (gemma, {"a": [True, True], "c": [True, False]})):
        rewards = pd.DataFrame([(p, ok) for p, oks in outcomes.items() for ok in oks], columns=["problem_id", "passed"])
        history.record(pass_rates(rewards, target.target(home)), Strata())

    result = materialize([difficulty_matrix], resources=resources({"GRADUS_HOME": str(home)}, target_model=smol))
    assert result.success
    table = result.output_for_node("difficulty_matrix")
    assert table["problem_id"].tolist() == ["a", "b", "c"]
    assert table["smol.pass_rate"].fillna(-1).tolist() == [0.5, 0.0, -1.0]
    assert table["gemma.pass_rate"].fillna(-1).tolist() == [1.0, -1.0, 0.5]
    assert table["gemma.trials"].astype(float).fillna(-1).tolist() == [2.0, -1.0, 2.0]
    meta = result.asset_materializations_for_node("difficulty_matrix")[0].metadata
    assert (meta["problems"].value, meta["models"].value, meta["target"].value) == (3, 2, "smol")
    assert "| smol " in meta["groups"].value and "| gemma " in meta["groups"].value
    assert meta[picture_key("target pass rate against other models")].value.startswith("![target pass rate")
