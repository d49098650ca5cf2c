"""Policy evaluation: the pass@k estimator against enumeration, and a real run of a tiny model
(trained here through TRL) evaluated with the transformers engine, the verifiers and the rollout
cache; a second evaluation is served from the cache."""

import json
from itertools import combinations

import pandas as pd
import pytest

from pipeline.core.storage import StorageLayout
from pipeline.curriculum.build import CurriculumSpec, build_curriculum
from pipeline.engines import create_engine
from pipeline.engines.base import SamplingConfig
from pipeline.ingest.benchmarks import EvaluationSet
from pipeline.rollouts.store import RolloutStore
from pipeline.training import SamplerSpec, StageSchedule, TrainingSpec, train_curriculum
from pipeline.training.evaluation import (
    ALL,
    EVALUATION_COLUMNS,
    EvaluationSpec,
    evaluate_policies,
    evaluation_plot_png,
    evaluation_problems,
    latest_run,
    pass_at_k,
    run_folder,
    run_policies,
    training_problem_ids,
)
from pipeline.verify.scoring import score_rollouts
from tests.pipeline.training.test_training import LABELLED_AT, problems_and_labels, tiny_model


@pytest.mark.parametrize("n,c,k", [(4, 0, 1), (4, 1, 1), (5, 2, 2), (6, 3, 4), (6, 5, 3), (3, 3, 3)])
def test_pass_at_k_is_the_chance_that_k_of_the_samples_hold_a_pass(n, c, k):
    outcomes = [True] * c + [False] * (n - c)
    subsets = list(combinations(outcomes, k))
    assert pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))


def test_pass_at_k_refuses_impossible_counts():
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)
    with pytest.raises(ValueError, match="k must be between 1 and samples_per_problem"):
        EvaluationSpec(samples_per_problem=2, k=3)


def test_a_missing_run_names_the_asset_to_materialize(home):
    with pytest.raises(FileNotFoundError, match="staged_rl_policy"):
        latest_run(StorageLayout(str(home)))
    with pytest.raises(FileNotFoundError, match="not a finished training run"):
        run_policies(home / "checkpoints" / "nothing")


def digit_set(folder, answers):
    """An evaluation set file of `What is a + 0 ?` problems the digit model can read."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "digits.jsonl"
    path.write_text("".join(json.dumps({"problem": f"What is {a} + 0 ?", "answer": a}) + "\n" for a in answers))
    return EvaluationSet("digits", path=str(path))


def test_every_checkpoint_of_a_run_is_evaluated_and_reevaluating_is_free(home, tmp_path, verifier_pool):
    base = tiny_model(tmp_path / "tiny")
    problems, labels = problems_and_labels([(7, 8), (2, 8)], answers=["1", "2"])
    build_curriculum(problems, labels, CurriculumSpec("digits"), home, LABELLED_AT)
    layout = StorageLayout(str(home))
    spec = TrainingSpec("digits", schedule=StageSchedule("fixed", steps_per_stage=1), prompts_per_step=1,
                        num_generations=4, learning_rate=1e-1, sampler=SamplerSpec("sequential"))
    train_curriculum(spec, base, verifier_pool, layout)
    folder = run_folder(layout, "")  # the newest run

    policies = run_policies(folder)
    assert [(p.name, p.phase, p.stage, p.step) for p in policies] == [
        ("base", 0, None, 0), ("stage_1", 1, 1, 1), ("stage_2", 2, 3, 2)]
    assert policies[0].model == base
    assert len({p.model.revision for p in policies}) == 3  # lr 0.1: each step moves the weights

    assert training_problem_ids(folder) == set(problems["problem_id"])
    benchmark = digit_set(tmp_path / "eval", ["1", "3", "4", "5", "6"])
    every = evaluation_problems([benchmark], home)
    # a problem that is also a training problem is left out
    eval_problems = evaluation_problems([benchmark], home, set(every["problem_id"][every["answer"] == "1"]))
    assert sorted(eval_problems["answer"]) == ["3", "4", "5", "6"]
    with pytest.raises(ValueError, match="no problems outside the curriculum"):
        evaluation_problems([benchmark], home, set(every["problem_id"]))

    started = []

    def engine_for(model):
        started.append(model)
        return create_engine("transformers", model, batch_size=8)

    sampling = SamplingConfig(temperature=1.0, max_tokens=3)
    eval_spec = EvaluationSpec(benchmarks=(benchmark,), samples_per_problem=6, k=3)
    lines = []
    frame = evaluate_policies(policies, eval_problems, eval_spec, sampling, home, engine_for, "transformers",
                              verifier_pool, "last_number", lines.append)

    assert list(frame.columns) == list(EVALUATION_COLUMNS)
    assert [m.revision for m in started] == [p.model.revision for p in policies]
    overall = frame[frame["category"] == ALL]
    assert overall["policy"].tolist() == ["base", "stage_1", "stage_2"] and overall["step"].tolist() == [0, 1, 2]
    assert (overall["problems"] == 4).all() and (overall["samples"] == 24).all()
    for policy, row in zip(policies, overall.itertuples()):
        # the figures are the verifier's verdicts on the rollouts cached under the policy's revision
        stored = RolloutStore(home, policy.model, sampling).load(eval_problems["problem_id"])
        passed = score_rollouts(eval_problems, stored, verifier_pool, "last_number").groupby("problem_id")["passed"]
        assert row.pass_at_1 == pytest.approx(passed.mean().mean())
        assert row.pass_at_k == pytest.approx(pd.Series(
            [pass_at_k(6, int(c), 3) for c in passed.sum()]).mean())
        assert row.pass_at_k >= row.pass_at_1
    assert any(line.startswith("evaluation: 3/3 policies") for line in lines)

    again = evaluate_policies(policies, eval_problems, eval_spec, sampling, home, engine_for, "transformers",
                              verifier_pool, "last_number")
    assert len(started) == 3  # every rollout came from the cache: no engine started
    pd.testing.assert_frame_equal(again, frame)
    assert evaluation_plot_png(frame).startswith(b"\x89PNG")
