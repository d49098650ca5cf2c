"""`staged_rl_policy`: GRPO fine-tuning of the target model through a curriculum, stage by stage."""


from typing import Optional

import pandas as pd
from dagster import AssetExecutionContext, Config, MetadataValue, Output, asset
from pydantic import Field

from assets.curriculum import curriculum
from assets.metadata import picture, preview
from assets.resources import GradusStorage, TargetModel, Verifier
from pipeline.training import SamplerSpec, StageSchedule, TrainingSpec, train_curriculum


class SamplerConfig(Config):
    """`pipeline.training.SamplerSpec`: which sampler picks each batch."""

    kind: str = Field(default="sequential", description="sequential, target_difficulty (AdaRFT) or ucb (DUMP)")
    initial_target: Optional[float] = Field(
        default=None, description="target_difficulty: starting target pass rate (empty: the easiest)")
    target_step: float = Field(default=0.1, description="target_difficulty: largest move of the target per step")
    sensitivity: float = Field(default=2.0, description="target_difficulty: tanh slope of the move")
    target_reward: float = Field(default=0.5, description="target_difficulty: mean reward the target steers to")
    exploration: float = Field(default=1.0, description="ucb: weight of the exploration bonus")
    window: int = Field(default=16, description="ucb: recent problem groups per stratum in its payoff")
    temperature: float = Field(default=0.0, description="ucb: softmax temperature over strata (0: the best)")
    signal: str = Field(default="abs_advantage", description="ucb: payoff, abs_advantage or reward_variance")


class ScheduleConfig(Config):
    """`pipeline.training.StageSchedule`: when a stage ends."""

    kind: str = Field(default="fixed", description="fixed (steps) or threshold (rolling mean reward)")
    steps_per_stage: int = Field(default=2, description="fixed: optimizer steps per stage")
    threshold: float = Field(default=0.5, description="threshold: rolling mean train reward that ends a stage")
    window: int = Field(default=2, description="threshold: steps in the rolling mean")
    max_steps_per_stage: int = Field(default=8, description="threshold: cap on a stage's steps")


class TrainingConfig(Config):
    """`pipeline.training.TrainingSpec`, field for field; the defaults are a tiny run that a 2-core
    CPU finishes in minutes, sampling as the curriculum's labels were sampled."""

    curriculum: str = Field(default="default", description="curriculum folder under $GRADUS_HOME/curricula/")
    run_name: str = Field(
        default="", description="folder under $GRADUS_HOME/checkpoints/ (empty: <curriculum>-<sampler>)")
    sampler: SamplerConfig = Field(default_factory=SamplerConfig, description="which sampler picks each batch")
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig, description="when each stage ends")
    prompts_per_step: int = Field(default=2, description="problems per optimizer step")
    num_generations: int = Field(default=2, description="completions per problem (GRPO group size)")
    learning_rate: float = Field(default=1e-5, description="AdamW learning rate (constant)")
    beta: float = Field(default=0.0, description="KL coefficient to the starting policy (0: no KL)")
    temperature: Optional[float] = Field(
        default=None, description="sampling temperature (empty: the one the labels were sampled at)")
    top_p: Optional[float] = Field(default=None, description="nucleus mass (empty: the labels')")
    max_completion_length: Optional[int] = Field(
        default=None, description="maximum generated tokens per completion (empty: the labels' max_tokens)")
    extraction_policy: Optional[str] = Field(
        default=None, description="how answers are read from completions (empty: the labels')")
    generation: str = Field(default="auto", description="vllm, transformers or auto (vLLM on a CUDA GPU)")
    seed: int = Field(default=0, description="seed for sampling, batches and TRL")

    def spec(self) -> TrainingSpec:
        values = self.model_dump()
        return TrainingSpec(**{**values, "sampler": SamplerSpec(**values["sampler"]),
                               "schedule": StageSchedule(**values["schedule"])})


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
    home = storage.root()
    start = target_model.spec(home)
    run = train_curriculum(config.spec(), start, verifier.pool(), home, context.log.info)
    summary = run.summary()
    return Output(
        run.log,
        metadata={
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
            "mean_reward": float(run.log["reward"].mean()),
            "reward_per_stage": picture(run.plot_png, "train reward per stage"),
            "log": preview(run.log, ["step", "phase", "stage", "reward", "samples_seen", "wall_s"]),
        },
    )
