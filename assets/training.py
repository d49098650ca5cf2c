"""`staged_rl_policy`: GRPO fine-tuning of the target model through a curriculum, stage by stage."""


from typing import Optional

import pandas as pd
from dagster import AssetExecutionContext, Config, MetadataValue, Output, asset
from pydantic import Field

from assets.curriculum import curriculum
from assets.metadata import picture, preview
from assets.resources import GradusStorage, TargetModel, Verifier
from pipeline.training import SamplerSpec, StageSchedule, TrainingSpec, train_curriculum


class TrainingConfig(Config):
    """What to train on and how; the defaults are a tiny run that a 2-core CPU finishes in minutes."""

    curriculum: str = Field(default="default", description="curriculum folder under $GRADUS_HOME/curricula/")
    run_name: str = Field(default="", description="folder under $GRADUS_HOME/checkpoints/ (empty: <curriculum>-<sampler>)")
    schedule: str = Field(default="fixed", description="when a stage ends: fixed (steps) or threshold (reward)")
    steps_per_stage: int = Field(default=2, description="fixed: optimizer steps per stage")
    threshold: float = Field(default=0.5, description="threshold: rolling mean train reward that ends a stage")
    window: int = Field(default=2, description="threshold: steps in the rolling mean")
    max_steps_per_stage: int = Field(default=8, description="threshold: cap on a stage's steps")
    sampler: str = Field(default="sequential", description="sequential, target_difficulty (AdaRFT) or ucb (DUMP)")
    initial_target: Optional[float] = Field(
        default=None, description="target_difficulty: starting target pass rate (empty: the easiest)")
    target_step: float = Field(default=0.1, description="target_difficulty: largest move of the target per step")
    sensitivity: float = Field(default=2.0, description="target_difficulty: tanh slope of the move")
    target_reward: float = Field(default=0.5, description="target_difficulty: mean reward the target steers to")
    exploration: float = Field(default=1.0, description="ucb: weight of the exploration bonus")
    ucb_window: int = Field(default=16, description="ucb: recent problem groups per stratum in its payoff")
    ucb_temperature: float = Field(default=0.0, description="ucb: softmax temperature (0: best stratum)")
    signal: str = Field(default="abs_advantage", description="ucb: payoff, abs_advantage or reward_variance")
    learning_rate: float = Field(default=1e-5, description="AdamW learning rate (constant)")
    beta: float = Field(default=0.0, description="KL coefficient to the starting policy (0: no KL)")
    prompts_per_step: int = Field(default=2, description="problems per optimizer step")
    num_generations: int = Field(default=2, description="completions per problem (GRPO group size)")
    max_completion_length: int = Field(default=32, description="maximum generated tokens per completion")
    temperature: Optional[float] = Field(default=None, description="sampling temperature (empty: the curriculum's)")
    generation: str = Field(default="auto", description="vllm, transformers or auto (vLLM on a CUDA GPU)")
    seed: int = Field(default=0, description="seed for sampling, batches and TRL")

    def spec(self) -> TrainingSpec:
        return TrainingSpec(
            curriculum=self.curriculum,
            run=self.run_name,
            sampler=SamplerSpec(
                self.sampler, self.initial_target, self.target_step, self.sensitivity, self.target_reward,
                self.exploration, self.ucb_window, self.ucb_temperature, self.signal,
            ),
            schedule=StageSchedule(
                self.schedule, self.steps_per_stage, self.threshold, self.window, self.max_steps_per_stage
            ),
            prompts_per_step=self.prompts_per_step,
            num_generations=self.num_generations,
            max_completion_length=self.max_completion_length,
            learning_rate=self.learning_rate,
            beta=self.beta,
            temperature=self.temperature,
            generation=self.generation,
            seed=self.seed,
        )


@asset(group_name="training", deps=[curriculum])
def staged_rl_policy(
    context: AssetExecutionContext,
    config: TrainingConfig,
    storage: GradusStorage,
    target_model: TargetModel,
    verifier: Verifier,
) -> Output[pd.DataFrame]:
    """The target model fine-tuned with GRPO through the curriculum on disk, one phase per stage,
    rewarded by the verifiers that labelled it. Each phase leaves a checkpoint folder that
    `GRADUS_MODEL_PATH` (or `target_model.model_path`) can point at to relabel with it. The
    asset's value is the training log, one row per step."""
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
