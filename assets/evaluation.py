"""`policy_evaluation`: pass@1 and pass@k of the base model and every checkpoint of a training run."""


import pandas as pd
from dagster import AssetExecutionContext, MetadataValue, Output, asset

from assets.config import op_config, spec_config
from assets.metadata import picture
from assets.resources import GradusStorage, InferenceEngine, TargetModel, Verifier
from assets.training import staged_rl_policy
from pipeline.training.evaluation import (
    ALL,
    EvaluationSpec,
    evaluate_policies,
    evaluation_plot_png,
    evaluation_problems,
    run_folder,
    run_policies,
    training_problem_ids,
)


@op_config("policy_evaluation")
class EvaluationConfig(spec_config(EvaluationSpec)):
    """`pipeline.training.evaluation.EvaluationSpec`, field for field."""


def _table(frame: pd.DataFrame) -> MetadataValue:
    return MetadataValue.md(frame.round(3).to_markdown(index=False) if len(frame) else "_(empty)_")


def _weighted(rows: pd.DataFrame, column: str) -> float:
    return round(float((rows[column] * rows["problems"]).sum() / rows["problems"].sum()), 3)


@asset(group_name="training", deps=[staged_rl_policy])
def policy_evaluation(
    context: AssetExecutionContext,
    config: EvaluationConfig,
    storage: GradusStorage,
    target_model: TargetModel,
    engine: InferenceEngine,
    verifier: Verifier,
) -> Output[pd.DataFrame]:
    """Evaluation accuracy of the base model and of each stage's checkpoint of a training run, on an
    evaluation set disjoint from the run's curriculum, sampled as labels are (target_model's
    sampling, the same engine and verifiers) into the rollout cache under each checkpoint's
    revision, so re-evaluating generates nothing. One row per (policy, category), plus a row per
    policy with category `all`; `step` is the training steps taken (0: the base model)."""
    spec = config.to_spec()
    home = storage.layout().root
    folder = run_folder(storage.layout(), spec.run_name)
    policies = run_policies(folder)
    problems = evaluation_problems(spec.benchmarks, home, exclude_ids=training_problem_ids(folder))
    names = ", ".join(b.name for b in spec.benchmarks)
    context.log.info(f"evaluating {len(policies)} policies of {folder.name} on {len(problems)} problems of "
                     f"{names}, {spec.samples_per_problem} samples each")
    frame = evaluate_policies(
        policies, problems, spec, target_model.sampling(), home, engine.engine, engine.kind, verifier.pool(),
        target_model.extraction_policy, context.log.info,
    )
    overall = frame[frame["category"] == ALL]
    first = overall[overall["policy"] == "base"]
    last = overall[overall["step"] == overall["step"].max()]
    return Output(
        frame,
        metadata={
            "accuracy_by_step (picture)": picture(evaluation_plot_png(frame, f"{folder.name}: evaluation accuracy"),
                                                  "evaluation accuracy by training step"),
            "run": MetadataValue.path(str(folder)),
            "benchmarks": names,
            "problems": len(problems),
            "samples_per_problem": spec.samples_per_problem,
            # Weighted by problems, so several benchmarks give one figure.
            "base_pass_at_1": _weighted(first, "pass_at_1"),
            "final_pass_at_1": _weighted(last, "pass_at_1"),
            f"final_pass_at_{spec.k}": _weighted(last, "pass_at_k"),
            "policies": _table(overall[["policy", "step", "stage", "benchmark", "model_key", "pass_at_1", "pass_at_k"]]),
            "per_category_pass_at_1": _table(frame[frame["category"] != ALL].pivot_table(
                index=["benchmark", "category"], columns="policy", values="pass_at_1", sort=False).reset_index()),
        },
    )
