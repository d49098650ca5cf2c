"""Staged RL fine-tuning on a curriculum read from disk.

- `schedule`: when a phase ends (`StageSchedule`) and the per-step bookkeeping (`PhaseController`);
- `samplers`: which problems each batch trains on (sequential, AdaRFT target difficulty, DUMP UCB);
- `spec`: a run's settings (`TrainingSpec`), its sampling resolved against the labels;
- `pool`, `rewards`: the curriculum on disk and the verifier rewards that labelled it
  (`pipeline.rewards.trainers`, booked with the phase controller);
- `checkpoints`: each phase's policy as a Hugging Face folder with a content-hash revision;
- `grpo`: the TRL GRPO loop that ties them together.

Only `grpo` needs torch / TRL, and imports them when a run starts, so importing this package is cheap.
"""

from pipeline.training.checkpoints import save_checkpoint
from pipeline.training.grpo import StageResult, TrainingRun, reward_plot_png, train_curriculum
from pipeline.training.pool import CurriculumPool, load_curriculum
from pipeline.training.samplers import (
    CurriculumSampler,
    SamplerSpec,
    SequentialSampler,
    TargetDifficultySampler,
    UCBStrataSampler,
)
from pipeline.training.schedule import PhaseController, StageSchedule
from pipeline.training.spec import GenerationSettings, TrainingSpec

__all__ = [
    "CurriculumPool",
    "CurriculumSampler",
    "GenerationSettings",
    "PhaseController",
    "SamplerSpec",
    "SequentialSampler",
    "StageResult",
    "StageSchedule",
    "TargetDifficultySampler",
    "TrainingRun",
    "TrainingSpec",
    "UCBStrataSampler",
    "load_curriculum",
    "reward_plot_png",
    "save_checkpoint",
    "train_curriculum",
]
