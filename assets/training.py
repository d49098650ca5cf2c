"""`staged_rl_policy`: GRPO fine-tuning of the target model through a curriculum, stage by stage."""


import pandas as pd
from dagster import AssetExecutionContext, MetadataValue, Output, asset

from assets.config import op_config, spec_config
from assets.curriculum import curriculum
from assets.metadata import figure, picture_entry, preview
from assets.resources import GradusStorage, TargetModel, Verifier
from pipeline.training import TrainingSpec, train_curriculum


@op_config("staged_rl_policy")
class TrainingConfig(spec_config(TrainingSpec)):
    """`pipeline.training.TrainingSpec`, field for field; the defaults are a tiny run that a 2-core
    CPU finishes in minutes, sampling as the curriculum's labels were sampled."""


@asset(group_name="training", deps=[curriculum])
def staged_rl_policy(
    context: AssetExecutionContext,
    config: TrainingConfig,
    storage: GradusStorage,
    target_model: TargetModel,
    verifier: Verifier,
) -> Output[pd.DataFrame]:
    """The target model fine-tuned with GRPO through the curriculum on disk, one phase per stage,
    rewarded by the verifiers that labelled it and sampled as they were sampled. Each phase leaves
    a checkpoint folder that `GRADUS_MODEL_PATH` (or `target_model.model_path`) can point at to
    relabel with it. The asset's value is the training log, one row per step."""
    home = storage.layout().root
    start = target_model.spec(home)
    run = train_curriculum(config.to_spec(), start, verifier.pool(), storage.layout(), context.log.info)
    summary = run.summary()
    return Output(
        run.log,
        metadata={
            **picture_entry(run.plot_png, "train reward per stage"),
            "run": MetadataValue.path(str(run.folder)),
            "base_model": start.key,
            "generation": run.generation,
            "sampling": MetadataValue.json(
                {"temperature": run.settings.temperature, "top_p": run.settings.top_p,
                 "max_completion_length": run.settings.max_completion_length,
                 "extraction_policy": run.settings.extraction_policy}
            ),
            "steps": len(run.log),
            "stages": MetadataValue.md(summary.to_markdown(index=False)),
            "checkpoints": MetadataValue.json(
                [{"phase": s.phase, "path": s.checkpoint.path, "revision": s.checkpoint.revision} for s in run.stages]
            ),
            "mean_reward": figure(run.log["reward"].mean()),
            "log": preview(run.log, ["step", "phase", "stage", "reward", "samples_seen", "wall_s"]),
        },
    )
