"""`policy_evaluation` through Dagster: a tiny model trained by `staged_rl_policy` and evaluated,
checkpoint by checkpoint, with the transformers engine; its config mirrors the spec; and the
curriculum's informative-group figures."""

import base64
import dataclasses
import re

import pandas as pd
from dagster import DagsterInstance, SourceAsset, materialize

from assets.curriculum import curriculum
from assets.definitions import defs
from assets.deployment import resources as gradus_resources
from assets.evaluation import EvaluationConfig, policy_evaluation
from assets.preflight import OP_CONFIGS
from assets.training import staged_rl_policy
from pipeline.core.storage import StorageLayout
from pipeline.curriculum.build import CurriculumSpec, build_curriculum
from pipeline.curriculum.informative import informative_probability
from pipeline.training import TrainingSpec
from pipeline.training.evaluation import ALL, EVALUATION_COLUMNS, EvaluationSpec
from tests.pipeline.training.test_evaluation import digit_set
from tests.pipeline.training.test_training import LABELLED_AT, problems_and_labels, tiny_model


def test_evaluation_config_mirrors_the_spec_and_runs_in_its_own_job():
    assert list(EvaluationConfig.model_fields) == [f.name for f in dataclasses.fields(EvaluationSpec)]
    assert all(info.description for info in EvaluationConfig.model_fields.values())
    assert EvaluationConfig().to_spec() == EvaluationSpec()  # same defaults, nested sets included
    changed = EvaluationConfig(run_name="r", k=2, benchmarks=[{"name": "b", "path": "x.jsonl"}]).to_spec()
    assert (changed.run_name, changed.k, changed.benchmarks[0].path) == ("r", 2, "x.jsonl")
    assert OP_CONFIGS["policy_evaluation"] is EvaluationConfig
    assert defs.resolve_job_def("evaluate_job").asset_layer.executable_asset_keys == {policy_evaluation.key}


def test_policy_evaluation_scores_the_base_model_and_every_checkpoint(home, tmp_path):
    base = tiny_model(tmp_path / "tiny")
    problems, labels = problems_and_labels([(7, 8), (2, 8)], answers=["1", "2"])
    build_curriculum(problems, labels, CurriculumSpec("digits"), home, LABELLED_AT)
    benchmark = digit_set(tmp_path / "eval", ["3", "4", "5", "6"])
    resources = gradus_resources({"GRADUS_HOME": str(home), "GRADUS_MODEL_PATH": base.path,
                                  "GRADUS_ENGINE": "transformers"})
    config = {"ops": {
        "staged_rl_policy": {"config": {"curriculum": "digits", "schedule": {"steps_per_stage": 1},
                                        "prompts_per_step": 1, "num_generations": 4, "learning_rate": 0.1}},
        "policy_evaluation": {"config": {"samples_per_problem": 4, "k": 2, "benchmarks": [
            {"name": benchmark.name, "path": benchmark.path}]}},
    }}

    with DagsterInstance.ephemeral(tempdir=str(tmp_path / "dagster")) as instance:
        result = materialize([staged_rl_policy, policy_evaluation], resources=resources, run_config=config,
                             instance=instance)

    assert result.success
    frame = pd.read_parquet(home / "assets" / "policy_evaluation.parquet")
    assert list(frame.columns) == list(EVALUATION_COLUMNS)
    overall = frame[frame["category"] == ALL]
    assert overall["policy"].tolist() == ["base", "stage_1", "stage_2"] and overall["step"].tolist() == [0, 1, 2]
    assert (overall["problems"] == 4).all() and (overall["benchmark"] == "digits").all()
    assert overall["pass_at_1"].between(0, 1).all() and (overall["pass_at_k"] >= overall["pass_at_1"]).all()

    [event] = result.asset_materializations_for_node("policy_evaluation")
    meta = event.metadata
    picture = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", meta["accuracy_by_step (picture)"].value)
    assert base64.b64decode(picture.group(1)).startswith(b"\x89PNG")
    assert meta["base_pass_at_1"].value == round(float(overall["pass_at_1"].iloc[0]), 3)
    assert meta["final_pass_at_2"].value == round(float(overall["pass_at_k"].iloc[-1]), 3)
    assert "stage_2" in meta["policies"].value and "digits" in meta["per_category_pass_at_1"].value
    # figures in the tables are rounded to 3 decimals
    assert not re.search(r"\d\.\d{4,}", meta["policies"].value + meta["per_category_pass_at_1"].value)


def test_the_curriculum_records_how_many_grpo_groups_carry_gradient(home, tmp_path):
    layout = StorageLayout(str(home))
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    ids = ["solved", "unsolved", "half", "quarter"]
    successes = [8, 0, 4, 2]
    layout.asset(["unique_problems"]).parent.mkdir(parents=True)
    pd.DataFrame({"problem_id": ids, "source": "s", "prompt": [[{"role": "user", "content": f"q{i}"}] for i in ids],
                  "answer": "1", "verifier": "math", "category": "c", "metadata": "{}"}).to_parquet(
        layout.asset(["unique_problems"]))
    pd.DataFrame({"problem_id": ids}).to_parquet(layout.asset(["contamination"]))
    pd.DataFrame({"problem_id": ids, "successes": successes, "trials": 8, "pass_rate": [s / 8 for s in successes],
                  "ci_low": 0.0, "ci_high": 1.0}).to_parquet(layout.asset(["pass_rates"]))
    result = materialize(
        [SourceAsset("unique_problems"), SourceAsset("contamination"), SourceAsset("pass_rates"),
         SourceAsset("predicted_difficulty"), curriculum],
        resources=gradus_resources({"GRADUS_HOME": str(home), "GRADUS_MODEL_PATH": str(model)}),
    )

    assert result.success
    [event] = result.asset_materializations_for_node("curriculum")
    figures = event.metadata["informative_groups"].value
    G = TrainingSpec().num_generations
    assert figures["group_size"] == G
    staged = informative_probability([0.5, 0.25], G).mean()
    assert figures["pool"]["fraction"] == round(staged / 2, 4)  # the solved and unsolved problems add nothing
    assert figures["curriculum"]["fraction"] == round(staged, 4) and figures["ratio"] == 2.0
