"""The settings of one staged RL run (`TrainingSpec`), and the sampling it trains with, resolved
against the labels of its curriculum (`GenerationSettings`).

Sampling settings default to the labels' own: pass rates measured at one temperature, top-p and
token cap describe how hard a problem is for the policy sampled that way, so training samples the
same way unless told otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.core.storage import safe_name
from pipeline.curriculum.informative import GroupFilter
from pipeline.training.samplers import SamplerSpec
from pipeline.training.schedule import StageSchedule

GENERATION = ("auto", "vllm", "transformers")


@dataclass(frozen=True)
class GenerationSettings:
    """How the policy samples and reads answers during training, once resolved."""

    temperature: float
    top_p: float
    max_completion_length: int
    extraction_policy: str


@dataclass(frozen=True)
class TrainingSpec:
    """One staged RL run: which curriculum, how batches are picked, and GRPO's settings."""

    curriculum: str = field(default="default", metadata={"help": "Curriculum folder under `$GRADUS_HOME/curricula/`."})
    run_name: str = field(
        default="",
        metadata={"help": "Run folder under `$GRADUS_HOME/checkpoints/` (empty: `<curriculum>-<sampler>`)."},
    )
    sampler: SamplerSpec = field(default=SamplerSpec(), metadata={"help": "Which sampler picks each batch."})
    schedule: StageSchedule = field(default=StageSchedule(), metadata={"help": "When each phase (stage) ends."})
    prompts_per_step: int = field(
        default=2,
        metadata={"help": "Problems per optimizer step; each is sampled `num_generations` times."},
    )
    num_generations: int = field(
        default=2,
        metadata={"help": "Completions per problem: GRPO's group size (at least 2, for a group-relative advantage)."},
    )
    learning_rate: float = field(default=1e-5, metadata={"help": "AdamW learning rate, constant."})
    beta: float = field(
        default=0.0,
        metadata={"help": "KL coefficient against the starting policy (0: no reference model, and no KL is logged)."},
    )
    temperature: float | None = field(
        default=None,
        metadata={"help": "Sampling temperature (None: the one the curriculum was labelled at)."},
    )
    top_p: float | None = field(
        default=None,
        metadata={"help": "Nucleus mass (None: the one the curriculum was labelled at)."},
    )
    max_completion_length: int | None = field(
        default=None,
        metadata={"help": "Maximum generated tokens per completion (None: the labels' `max_tokens`)."},
    )
    extraction_policy: str | None = field(
        default=None,
        metadata={"help": "How answers are read from completions (None: the policy the curriculum was labelled with)."},
    )
    generation: str = field(
        default="auto",
        metadata={"help": "`vllm` (TRL's colocated engine, CUDA), `transformers`, "
                          "or `auto` (vLLM when CUDA and vLLM are there)."},
    )
    seed: int = field(default=0, metadata={"help": "Seed for sampling, batches and TRL."})

    def __post_init__(self) -> None:
        if self.generation not in GENERATION:
            raise ValueError(f"unknown generation {self.generation!r}; expected one of {', '.join(GENERATION)}")
        if self.num_generations < 2:
            raise ValueError("num_generations must be at least 2: GRPO compares completions within a group")
        if self.prompts_per_step < 1:
            raise ValueError("prompts_per_step must be at least 1")
        if self.max_completion_length is not None and self.max_completion_length < 1:
            raise ValueError("max_completion_length must be at least 1 (or None: the labels' max_tokens)")

    def group_filter(self, group_size: int = 0, train_batch_size: int = 0) -> GroupFilter:
        """The group filter a curriculum's manifest predicts for: these sizes, 0 meaning this run's
        `num_generations` and `prompts_per_step`."""
        return GroupFilter(group_size or self.num_generations, train_batch_size or self.prompts_per_step)

    @property
    def folder_name(self) -> str:
        """The run's folder name under `checkpoints/`."""
        return safe_name(self.run_name or f"{self.curriculum}-{self.sampler.kind}")

    def generation_settings(self, manifest: dict[str, Any], where: str) -> GenerationSettings:
        """The sampling this run trains with: each setting left None here is the labels' own, read
        from the curriculum manifest (`where` names the curriculum in errors)."""
        sampling = manifest.get("sampling") or {}
        wanted = {
            "temperature": (self.temperature, "temperature", "temperature"),
            "top_p": (self.top_p, "top_p", "top_p"),
            "max_completion_length": (self.max_completion_length, "max_tokens", "max_completion_length"),
        }
        values: dict[str, Any] = {}
        missing: list[str] = []
        for name, (override, label_key, config_name) in wanted.items():
            if override is not None:
                values[name] = override
            elif sampling.get(label_key) is not None:
                values[name] = sampling[label_key]
            else:
                missing.append(f"sampling.{label_key} (or set {config_name})")
        policy = self.extraction_policy or manifest.get("extraction_policy")
        if policy is None:
            missing.append("extraction_policy (or set extraction_policy)")
        if missing:
            raise ValueError(
                f"curriculum {where} does not record how its labels were sampled: its manifest lacks "
                f"{', '.join(missing)}. Rebuild it with the `curriculum` asset, whose manifest records the "
                "labels' sampling, or set these explicitly in the training config; training at other "
                "settings than the labels' makes its stages measure another policy's difficulty."
            )
        return GenerationSettings(
            float(values["temperature"]), float(values["top_p"]), int(values["max_completion_length"]), policy
        )
