"""Staged RL fine-tuning on a curriculum read from disk: stage schedules, curriculum samplers, and
the GRPO loop (TRL) around them, with a loadable checkpoint after every stage.

Training runs in phases, one per non-empty curriculum stage. A `StageSchedule` decides when a phase
ends (a fixed number of steps, or once the rolling mean train reward passes a threshold, with a
cap). A sampler picks each batch's problems:
- `sequential`: phase k trains on stage k only, easy → hard;
- `target_difficulty` (AdaRFT, arXiv 2504.05520): the problems whose labelled pass rate is closest
  to a target that moves with the train reward: harder when the reward is above the aim, easier
  when below;
- `ucb` (DUMP, arXiv 2504.09710): a bandit over strata whose payoff is a learnability signal (the
  mean absolute group-relative advantage, or the reward variance), with UCB exploration.
Rewards come from the verifiers that labelled the data, so a stage's mean train reward is directly
comparable with its labelled pass rate. After each phase the policy is saved as a Hugging Face
folder with a `gradus_model.json` marker (model id and a content-hash revision), so relabelling the
checkpoint gives labels under a new key.
"""

from __future__ import annotations

import abc
import importlib.util
import json
import logging
import shutil
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.curriculum import MANIFEST, manifest_problems, read_manifest
from pipeline.extraction import extract_answer
from pipeline.model import MODEL_MARKER, ModelSpec, folder_revision, load_tokenizer
from pipeline.plots import axes, png
from pipeline.storage import (
    safe_name,
    swap_in,
    within,
    write_bytes_atomic,
    write_parquet_atomic,
    write_text_atomic,
)
from pipeline.verification import VerificationTask, VerifierPool

log = logging.getLogger(__name__)

SCHEDULES = ("fixed", "threshold")
SAMPLERS = ("sequential", "target_difficulty", "ucb")
SIGNALS = ("abs_advantage", "reward_variance")
GENERATION = ("auto", "vllm", "transformers")
# TRL metrics copied into the training log when it reports them (kl only when beta > 0).
# frac_reward_zero_std is the share of problem groups whose completions all scored alike: they
# have zero advantage, so a step where it is 1 cannot move the weights.
TRL_METRICS = ("loss", "grad_norm", "kl", "entropy", "frac_reward_zero_std")


# --- schedule ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StageSchedule:
    """When a phase (stage) ends."""

    kind: str = "fixed"
    """`fixed`: after `steps_per_stage` steps; `threshold`: once the rolling mean reward passes
    `threshold`, or after `max_steps_per_stage` steps."""
    steps_per_stage: int = 2
    """fixed: optimizer steps per stage."""
    threshold: float = 0.5
    """threshold: the rolling mean train reward that ends a stage."""
    window: int = 2
    """threshold: steps in the rolling mean; a stage runs at least this many steps."""
    max_steps_per_stage: int = 8
    """threshold: the cap on a stage's steps."""

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.kind!r}; expected one of {', '.join(SCHEDULES)}")
        if min(self.steps_per_stage, self.window, self.max_steps_per_stage) < 1:
            raise ValueError("steps_per_stage, window and max_steps_per_stage must be at least 1")

    @property
    def max_steps(self) -> int:
        """The most steps one stage can take."""
        return self.steps_per_stage if self.kind == "fixed" else self.max_steps_per_stage

    def done(self, stage_rewards: Sequence[float]) -> bool:
        """Whether a stage whose steps earned `stage_rewards` (mean reward per step) is over."""
        steps = len(stage_rewards)
        if steps >= self.max_steps:
            return True
        if self.kind == "threshold" and steps >= self.window:
            return float(np.mean(stage_rewards[-self.window :])) >= self.threshold
        return False


# --- samplers ------------------------------------------------------------------------------------


class CurriculumSampler(abc.ABC):
    """Picks the problems (row indices into the curriculum pool) of each batch, and sees the
    rewards each batch earned."""

    def __init__(self, pass_rate: Sequence[float], stage: Sequence[int], seed: int = 0) -> None:
        self.pass_rate = np.asarray(pass_rate, dtype=float)
        self.stage = np.asarray(stage, dtype=np.int64)
        if self.pass_rate.size == 0 or self.pass_rate.shape != self.stage.shape:
            raise ValueError("a sampler needs a non-empty pool with one pass rate and one stage per row")
        self.stages = [int(s) for s in np.unique(self.stage)]
        self.rng = np.random.default_rng(seed)

    def begin_phase(self, phase: int) -> None:
        """Phase `phase` (1-based, one per non-empty stage) starts."""

    @abc.abstractmethod
    def draw(self, n: int) -> np.ndarray:
        """The rows of the next batch of `n` problems."""

    def observe(self, rows: np.ndarray, rewards: np.ndarray) -> None:
        """Rewards of one batch, one per completion (`rows[i]` is the problem of `rewards[i]`)."""

    def state(self) -> dict[str, float]:
        """Figures that explain the next draw, for the training log."""
        return {}


class SequentialSampler(CurriculumSampler):
    """Phase k draws from the k-th non-empty stage only, in shuffled passes over its problems."""

    def __init__(self, pass_rate: Sequence[float], stage: Sequence[int], seed: int = 0) -> None:
        super().__init__(pass_rate, stage, seed)
        self._members = np.array([], dtype=np.int64)
        self._queue: list[int] = []

    def begin_phase(self, phase: int) -> None:
        self._members = np.flatnonzero(self.stage == self.stages[phase - 1])
        self._queue = []

    def draw(self, n: int) -> np.ndarray:
        if self._members.size == 0:
            raise RuntimeError("begin_phase must be called before drawing")
        rows = []
        for _ in range(n):
            if not self._queue:
                self._queue = self.rng.permutation(self._members).tolist()
            rows.append(self._queue.pop())
        return np.asarray(rows, dtype=np.int64)


class TargetDifficultySampler(CurriculumSampler):
    """AdaRFT on the pass-rate scale: a batch is the problems whose labelled pass rate is closest
    to a target (ties broken at random), and after each batch

        target ← clip(target − step · tanh(sensitivity · (mean reward − target_reward)), lo, hi)

    so a reward above the aim moves the target to lower pass rates (harder problems) and a reward
    below it to higher ones. `lo` / `hi` are the pool's lowest and highest pass rates."""

    def __init__(
        self,
        pass_rate: Sequence[float],
        stage: Sequence[int],
        seed: int = 0,
        initial_target: float | None = None,
        step: float = 0.1,
        sensitivity: float = 2.0,
        target_reward: float = 0.5,
    ) -> None:
        super().__init__(pass_rate, stage, seed)
        self.low, self.high = float(self.pass_rate.min()), float(self.pass_rate.max())
        start = self.high if initial_target is None else initial_target
        self.target = float(np.clip(start, self.low, self.high))
        self.step, self.sensitivity, self.target_reward = step, sensitivity, target_reward

    def draw(self, n: int) -> np.ndarray:
        distance = np.abs(self.pass_rate - self.target)
        order = np.lexsort((self.rng.random(distance.size), distance))
        return np.resize(order, n).astype(np.int64)

    def observe(self, rows: np.ndarray, rewards: np.ndarray) -> None:
        gap = float(np.mean(rewards)) - self.target_reward
        moved = self.target - self.step * np.tanh(self.sensitivity * gap)
        self.target = float(np.clip(moved, self.low, self.high))

    def state(self) -> dict[str, float]:
        return {"target_pass_rate": self.target}


class UCBStrataSampler(CurriculumSampler):
    """DUMP: each stratum is a bandit arm. An arm's payoff is the learnability of the problem
    groups drawn from it (mean |reward − group mean|, or the group's reward variance), averaged
    over its last `window` groups; its score adds `exploration · sqrt(2 ln N / n_arm)`. Arms never
    played come first; then each slot of a batch picks an arm by softmax(score / temperature)
    (temperature 0: the best arm), and a problem uniformly within it."""

    def __init__(
        self,
        pass_rate: Sequence[float],
        stage: Sequence[int],
        seed: int = 0,
        exploration: float = 1.0,
        window: int = 16,
        temperature: float = 0.0,
        signal: str = "abs_advantage",
    ) -> None:
        super().__init__(pass_rate, stage, seed)
        if signal not in SIGNALS:
            raise ValueError(f"unknown signal {signal!r}; expected one of {', '.join(SIGNALS)}")
        self.exploration, self.temperature, self.signal = exploration, temperature, signal
        self._members = {s: np.flatnonzero(self.stage == s) for s in self.stages}
        self._payoffs: dict[int, deque[float]] = {s: deque(maxlen=window) for s in self.stages}
        self.plays = {s: 0 for s in self.stages}

    def scores(self) -> np.ndarray:
        """UCB score per arm, in `stages` order (inf for arms never played)."""
        total = sum(self.plays.values())
        out = np.full(len(self.stages), np.inf)
        for i, s in enumerate(self.stages):
            if self.plays[s]:
                bonus = self.exploration * np.sqrt(2.0 * np.log(total) / self.plays[s])
                out[i] = float(np.mean(self._payoffs[s])) + bonus
        return out

    def _arms(self, n: int) -> list[int]:
        unplayed = [s for s in self.stages if not self.plays[s]]
        if unplayed:
            return [unplayed[i % len(unplayed)] for i in range(n)]
        scores = self.scores()
        if self.temperature <= 0:
            best = np.flatnonzero(scores == scores.max())
            return [self.stages[int(self.rng.choice(best))]] * n
        weights = np.exp((scores - scores.max()) / self.temperature)
        picks = self.rng.choice(len(self.stages), size=n, p=weights / weights.sum())
        return [self.stages[int(i)] for i in picks]

    def draw(self, n: int) -> np.ndarray:
        return np.asarray([self.rng.choice(self._members[arm]) for arm in self._arms(n)], dtype=np.int64)

    def observe(self, rows: np.ndarray, rewards: np.ndarray) -> None:
        rows, rewards = np.asarray(rows), np.asarray(rewards, dtype=float)
        for row in np.unique(rows):
            group = rewards[rows == row]
            if self.signal == "abs_advantage":
                payoff = float(np.mean(np.abs(group - group.mean())))
            else:
                payoff = float(np.var(group))
            arm = int(self.stage[row])
            self._payoffs[arm].append(payoff)
            self.plays[arm] += 1


@dataclass(frozen=True)
class SamplerSpec:
    """Which sampler picks the batches, and its settings."""

    kind: str = "sequential"
    """`sequential`, `target_difficulty` (AdaRFT) or `ucb` (DUMP)."""
    initial_target: float | None = None
    """target_difficulty: starting target pass rate (None: the pool's highest, i.e. easiest first)."""
    target_step: float = 0.1
    """target_difficulty: the most the target pass rate moves per step."""
    sensitivity: float = 2.0
    """target_difficulty: how sharply the move responds to the reward gap (tanh slope)."""
    target_reward: float = 0.5
    """target_difficulty: the mean reward the target steers towards."""
    exploration: float = 1.0
    """ucb: weight of the exploration bonus."""
    window: int = 16
    """ucb: recent problem groups per stratum in its payoff mean."""
    temperature: float = 0.0
    """ucb: softmax temperature over scores (0: always the best stratum)."""
    signal: str = "abs_advantage"
    """ucb: payoff per problem group, `abs_advantage` or `reward_variance`."""

    def __post_init__(self) -> None:
        if self.kind not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.kind!r}; expected one of {', '.join(SAMPLERS)}")

    def build(self, pass_rate: Sequence[float], stage: Sequence[int], seed: int) -> CurriculumSampler:
        if self.kind == "sequential":
            return SequentialSampler(pass_rate, stage, seed)
        if self.kind == "target_difficulty":
            return TargetDifficultySampler(
                pass_rate, stage, seed, self.initial_target, self.target_step, self.sensitivity, self.target_reward
            )
        return UCBStrataSampler(
            pass_rate, stage, seed, self.exploration, self.window, self.temperature, self.signal
        )


# --- phases --------------------------------------------------------------------------------------


class PhaseController:
    """Runs the phases in order: hands out batches from the sampler, books each batch's rewards,
    and says when the schedule ends a phase. One `record` per optimizer step."""

    def __init__(self, sampler: CurriculumSampler, schedule: StageSchedule, phases: int) -> None:
        if phases < 1:
            raise ValueError("need at least one phase")
        self.sampler, self.schedule, self.phases = sampler, schedule, phases
        self.phase = 1
        self.records: list[dict[str, Any]] = []
        self._state: dict[str, float] = {}
        self._drawn = 0
        sampler.begin_phase(1)

    @property
    def finished(self) -> bool:
        return self.phase > self.phases

    def draw(self, n: int) -> np.ndarray:
        """The next batch's rows (each then sampled `num_generations` times)."""
        if self.finished:
            raise RuntimeError("every phase is done")
        self._state = self.sampler.state()
        rows = self.sampler.draw(n)
        self._drawn = len(rows)
        return rows

    def record(self, rows: Sequence[int], rewards: Sequence[float]) -> None:
        """Book one step's rewards, one per completion."""
        rows, rewards = np.asarray(rows, dtype=np.int64), np.asarray(rewards, dtype=float)
        self.sampler.observe(rows, rewards)
        stages, counts = np.unique(self.sampler.stage[rows], return_counts=True)
        self.records.append(
            {
                "step": len(self.records) + 1,
                "phase": self.phase,
                "phase_step": len(self.phase_rewards()) + 1,
                "stage": int(stages[np.argmax(counts)]),
                "batch_pass_rate": float(self.sampler.pass_rate[rows].mean()),
                "reward": float(rewards.mean()),
                "reward_std": float(rewards.std()),
                "prompts": self._drawn or len(np.unique(rows)),
                "completions": len(rows),
                **self._state,
            }
        )

    def annotate(self, step: int, values: dict[str, float]) -> None:
        """Add figures known only later (losses, KL, timings) to step `step`'s record."""
        if 1 <= step <= len(self.records):
            self.records[step - 1].update(values)

    def phase_rewards(self) -> list[float]:
        return [r["reward"] for r in self.records if r["phase"] == self.phase]

    def phase_done(self) -> bool:
        return self.schedule.done(self.phase_rewards())

    def advance(self) -> None:
        self.phase += 1
        if not self.finished:
            self.sampler.begin_phase(self.phase)

    def frame(self) -> pd.DataFrame:
        """The training log so far, one row per step, with cumulative samples seen."""
        frame = pd.DataFrame(self.records)
        if not frame.empty:
            frame["prompts_seen"] = frame["prompts"].cumsum()
            frame["samples_seen"] = frame["completions"].cumsum()
        return frame


# --- the curriculum on disk ----------------------------------------------------------------------


@dataclass(frozen=True)
class CurriculumPool:
    """Every staged row of a curriculum, read from its folder, in stage order."""

    folder: Path
    manifest: dict[str, Any]
    table: pa.Table

    @property
    def pass_rate(self) -> np.ndarray:
        return self.table.column("pass_rate").to_numpy()

    @property
    def stage(self) -> np.ndarray:
        return self.table.column("stage").to_numpy()


def load_curriculum(home: Path, name: str) -> CurriculumPool:
    """The curriculum `name` under `home/curricula/`, checked against its manifest first."""
    folder = within(home, "curricula", safe_name(name))
    if not (folder / MANIFEST).is_file():
        raise FileNotFoundError(f"no curriculum at {folder}: materialize `curriculum` with name {name!r} first")
    issues = manifest_problems(folder)
    if issues:
        raise ValueError(f"curriculum {folder} disagrees with its manifest: " + "; ".join(issues))
    manifest = read_manifest(folder)
    parts = [pq.read_table(folder / s["file"]) for s in manifest["stages"] if s["rows"]]
    if not parts:
        raise ValueError(f"curriculum {folder} has no staged problems to train on")
    return CurriculumPool(folder, manifest, pa.concat_tables(parts))


# --- rewards -------------------------------------------------------------------------------------


def completion_text(completion: str | list[dict[str, str]]) -> str:
    """A completion as text: TRL passes chat completions as a list of messages."""
    if isinstance(completion, str):
        return completion
    return "".join(m["content"] for m in completion if m.get("role") == "assistant")


def verifier_rewards(
    completions: Sequence[str],
    ground_truths: Sequence[str],
    verifiers: Sequence[str],
    metadata: Sequence[str],
    pool: VerifierPool,
    policy: str = "auto",
) -> list[float]:
    """1.0 for each completion whose extracted answer the problem's verifier passes, else 0.0:
    the rule that labelled the pass rates, so mean train reward and pass rate are comparable."""
    tasks = [
        VerificationTask(verifier, gold, extract_answer(text, policy), meta)
        for text, gold, verifier, meta in zip(completions, ground_truths, verifiers, metadata, strict=True)
    ]
    return [1.0 if v.passed else 0.0 for v in pool.verify_many(tasks)]


def _reward_function(
    pool: VerifierPool, policy: str, controller: PhaseController
) -> Callable[..., list[float]]:
    """`verifier_rewards` with TRL's calling convention; books every batch with the controller."""

    def verifier_reward(
        prompts: list[Any],
        completions: list[Any],
        reward_model: list[dict[str, str]],
        extra_info: list[dict[str, str]],
        row: list[int],
        **_: Any,
    ) -> list[float]:
        rewards = verifier_rewards(
            [completion_text(c) for c in completions],
            [r["ground_truth"] for r in reward_model],
            [e["verifier"] for e in extra_info],
            [e["metadata"] for e in extra_info],
            pool,
            policy,
        )
        controller.record(row, rewards)
        return rewards

    return verifier_reward


# --- checkpoints ---------------------------------------------------------------------------------


def save_checkpoint(
    model: Any, tokenizer: Any, folder: Path, base: ModelSpec, provenance: dict[str, Any]
) -> ModelSpec:
    """Save a policy as a Hugging Face folder that `resolve_model` loads with a new revision.

    The revision is the content hash of the saved files, recorded in the `gradus_model.json`
    marker with the base model's id, so labels of the checkpoint never mix with the base's. The
    folder is written beside its final place and swapped in whole.
    """
    staging = folder.with_name(f".{folder.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    revision = folder_revision(staging)
    marker = {
        "model_id": base.model_id,
        "revision": revision,
        "base_model": {"model_id": base.model_id, "revision": base.revision, "path": base.path},
        **provenance,
    }
    write_text_atomic(json.dumps(marker, indent=2, default=str), staging / MODEL_MARKER)
    swap_in(staging, folder)
    return ModelSpec(str(folder), base.model_id, revision)


# --- the run -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingSpec:
    """One staged RL run: which curriculum, how batches are picked, and GRPO's settings."""

    curriculum: str = "default"
    """Curriculum folder under `$GRADUS_HOME/curricula/`."""
    run: str = ""
    """Run folder under `$GRADUS_HOME/checkpoints/` (empty: `<curriculum>-<sampler>`)."""
    sampler: SamplerSpec = SamplerSpec()
    schedule: StageSchedule = StageSchedule()
    prompts_per_step: int = 2
    """Problems per optimizer step; each is sampled `num_generations` times."""
    num_generations: int = 2
    """Completions per problem: GRPO's group size (at least 2, for a group-relative advantage)."""
    max_completion_length: int = 32
    """Maximum generated tokens per completion."""
    learning_rate: float = 1e-5
    """AdamW learning rate, constant."""
    beta: float = 0.0
    """KL coefficient against the starting policy (0: no reference model, and no KL is logged)."""
    temperature: float | None = None
    """Sampling temperature (None: the one the curriculum was labelled at)."""
    top_p: float | None = None
    """Nucleus mass (None: the curriculum's)."""
    extraction_policy: str | None = None
    """How answers are read from completions (None: the curriculum's)."""
    generation: str = "auto"
    """`vllm` (TRL's colocated engine, CUDA), `transformers`, or `auto` (vLLM when CUDA and vLLM are there)."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.generation not in GENERATION:
            raise ValueError(f"unknown generation {self.generation!r}; expected one of {', '.join(GENERATION)}")
        if self.num_generations < 2:
            raise ValueError("num_generations must be at least 2: GRPO compares completions within a group")
        if self.prompts_per_step < 1:
            raise ValueError("prompts_per_step must be at least 1")

    @property
    def run_name(self) -> str:
        return safe_name(self.run or f"{self.curriculum}-{self.sampler.kind}")


@dataclass(frozen=True)
class StageResult:
    """One phase: its steps, rewards, time and checkpoint."""

    phase: int
    stage: int | None
    """The curriculum stage trained on (sequential sampler), else None."""
    steps: int
    mean_reward: float
    wall_s: float
    """Seconds of training steps in the phase (checkpoint writing excluded)."""
    save_s: float
    checkpoint: ModelSpec


@dataclass
class TrainingRun:
    """What a run produced: the per-step log, one checkpoint per phase, and where they are."""

    base: ModelSpec
    folder: Path
    log: pd.DataFrame
    stages: list[StageResult] = field(default_factory=list)
    generation: str = "transformers"
    plot_png: bytes = b""

    def summary(self) -> pd.DataFrame:
        return pd.DataFrame(
            [
                {
                    "phase": s.phase,
                    "stage": s.stage,
                    "steps": s.steps,
                    "mean_reward": s.mean_reward,
                    "wall_s": round(s.wall_s, 2),
                    "save_s": round(s.save_s, 2),
                    "checkpoint": s.checkpoint.path,
                    "revision": s.checkpoint.revision,
                }
                for s in self.stages
            ]
        )


def _use_vllm(generation: str) -> bool:
    if generation != "auto":
        return generation == "vllm"
    import torch

    return torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None


def _trainer_class() -> type:
    """GRPOTrainer whose batches the phase controller picks when a step generates.

    The dataloader's sampler would be the natural hook, but accelerate reads it one batch ahead,
    so a batch would be chosen before the previous step's rewards (and a phase end) are known.
    """
    from trl import GRPOTrainer

    class CurriculumGRPOTrainer(GRPOTrainer):
        controller: PhaseController
        prompts_per_step: int

        def _prepare_inputs(self, generation_batch: Any) -> Any:
            if self.model.training:
                rows = self.controller.draw(self.prompts_per_step)
                generation_batch = [self.train_dataset[int(r)] for r in np.repeat(rows, self.num_generations)]
            return super()._prepare_inputs(generation_batch)

    return CurriculumGRPOTrainer


def _phase_callback(controller: PhaseController, end_phase: Callable[[Any, Any], None], started: float) -> Any:
    from transformers import TrainerCallback

    class PhaseCallback(TrainerCallback):
        """Times steps, copies TRL's metrics into the log, and ends phases as the schedule says."""

        step_started = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self.step_started = time.perf_counter()

        def on_step_end(self, args, state, control, model=None, processing_class=None, **kwargs):
            now = time.perf_counter()
            controller.annotate(state.global_step, {"step_s": now - self.step_started, "wall_s": now - started})
            if controller.phase_done():
                end_phase(model, processing_class)
                controller.advance()
            if controller.finished:
                control.should_training_stop = True
            return control

        def on_log(self, args, state, control, logs=None, **kwargs):
            metrics = {k: float(logs[k]) for k in TRL_METRICS if logs and logs.get(k) is not None}
            controller.annotate(state.global_step, metrics)

    return PhaseCallback()


def reward_plot_png(frame: pd.DataFrame) -> bytes:
    """Train reward per step, one colour per phase, with each phase's mean as a line."""
    fig, ax = axes(6, 3.2)
    for phase, part in frame.groupby("phase"):
        label = f"phase {phase}: stage {part['stage'].mode().iloc[0]} (mean {part['reward'].mean():.2f})"
        points = ax.plot(part["step"], part["reward"], marker="o", label=label)
        ax.hlines(part["reward"].mean(), part["step"].min() - 0.4, part["step"].max() + 0.4,
                  colors=points[0].get_color(), linestyles="dashed")
    ax.set_xlabel("step")
    ax.set_ylabel("mean train reward")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title("train reward per stage")
    ax.legend(fontsize=7)
    return png(fig)


def _grpo_config(
    spec: TrainingSpec, sampling: dict[str, Any], folder: Path, use_vllm: bool, max_steps: int
) -> Any:
    """GRPO settings: one generation batch per optimizer step (the controller books rewards per
    step), a constant learning rate (the step count is only an upper bound), nothing saved by TRL."""
    import torch
    from trl import GRPOConfig

    cuda = torch.cuda.is_available()
    return GRPOConfig(
        output_dir=str(folder / ".trainer"),
        use_cpu=not cuda,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        use_vllm=use_vllm,
        vllm_mode="colocate",
        per_device_train_batch_size=spec.prompts_per_step * spec.num_generations,
        num_generations=spec.num_generations,
        max_completion_length=spec.max_completion_length,
        temperature=spec.temperature if spec.temperature is not None else sampling.get("temperature", 1.0),
        top_p=spec.top_p if spec.top_p is not None else sampling.get("top_p", 1.0),
        learning_rate=spec.learning_rate,
        lr_scheduler_type="constant",
        beta=spec.beta,
        max_steps=max_steps,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        gradient_checkpointing=False,
        disable_tqdm=True,
        seed=spec.seed,
    )


def train_curriculum(
    spec: TrainingSpec,
    start: ModelSpec,
    pool: VerifierPool,
    home: Path,
    progress: Callable[[str], None] = log.info,
) -> TrainingRun:
    """Train `start` with GRPO through the curriculum `spec.curriculum`, one phase per non-empty
    stage, saving `checkpoints/<run>/stage_<k>/` after phase k, plus `training_log.parquet`,
    `reward_per_stage.png` and `run.json` in the run folder."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, PrinterCallback

    curriculum = load_curriculum(home, spec.curriculum)
    manifest = curriculum.manifest
    labelled_by = manifest.get("model", {}).get("revision")
    if labelled_by and labelled_by != start.revision:
        progress(f"warning: {spec.curriculum} was labelled by revision {labelled_by}, training starts from "
                 f"{start.key}: its stages measure another model's difficulty")
    policy = spec.extraction_policy or manifest.get("extraction_policy", "auto")
    folder = within(home, "checkpoints", spec.run_name)
    folder.mkdir(parents=True, exist_ok=True)

    sampler = spec.sampler.build(curriculum.pass_rate, curriculum.stage, spec.seed)
    controller = PhaseController(sampler, spec.schedule, phases=len(sampler.stages))
    table = curriculum.table
    dataset = Dataset(
        table.select(["prompt", "reward_model", "extra_info"]).append_column(
            "row", pa.array(np.arange(table.num_rows), pa.int64())
        )
    )
    use_vllm = _use_vllm(spec.generation)
    max_steps = controller.phases * spec.schedule.max_steps
    config = _grpo_config(spec, manifest.get("sampling", {}), folder, use_vllm, max_steps)
    progress(f"training {start.key} on {curriculum.folder.name}: {table.num_rows} problems, "
             f"{controller.phases} phases, sampler {spec.sampler.kind}, schedule {spec.schedule.kind}, "
             f"generation {'vllm' if use_vllm else 'transformers'}")

    model = AutoModelForCausalLM.from_pretrained(start.path, dtype=torch.float32)
    tokenizer = load_tokenizer(start)
    run = TrainingRun(start, folder, pd.DataFrame(), generation="vllm" if use_vllm else "transformers")

    def end_phase(trained: Any, processing_class: Any) -> None:
        phase = controller.phase
        rewards = controller.phase_rewards()
        records = [r for r in controller.records if r["phase"] == phase]
        stage = sampler.stages[phase - 1] if spec.sampler.kind == "sequential" else None
        saving = time.perf_counter()
        checkpoint = save_checkpoint(
            trained, processing_class, folder / f"stage_{phase}", start,
            {"run": spec.run_name, "curriculum": spec.curriculum, "phase": phase, "stage": stage,
             "steps": len(rewards), "label_key_of_curriculum": manifest.get("label_key")},
        )
        result = StageResult(
            phase, stage, len(rewards), float(np.mean(rewards)),
            float(sum(r.get("step_s", 0.0) for r in records)), time.perf_counter() - saving, checkpoint,
        )
        run.stages.append(result)
        progress(f"phase {phase} (stage {stage}): {result.steps} steps, mean reward {result.mean_reward:.3f}, "
                 f"{result.wall_s:.1f} s; checkpoint {checkpoint.path} @ {checkpoint.revision}")

    trainer = _trainer_class()(
        model=model,
        reward_funcs=_reward_function(pool, policy, controller),
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    if trainer.accelerator.num_processes != 1:
        raise RuntimeError("staged training runs in one process: the controller picks batches per process")
    trainer.remove_callback(PrinterCallback)  # the phase log says what matters, once per phase
    trainer.controller = controller
    trainer.prompts_per_step = spec.prompts_per_step
    # Start the verifier workers now, so the first step's time is the step's own.
    pool.gold_problems([VerificationTask("math", "1", None)])
    trainer.add_callback(_phase_callback(controller, end_phase, time.perf_counter()))
    trainer.train()
    if not controller.finished:
        raise RuntimeError(f"training stopped in phase {controller.phase} of {controller.phases}")

    for stale in folder.glob("stage_*"):
        if stale.name not in {f"stage_{s.phase}" for s in run.stages}:
            shutil.rmtree(stale, ignore_errors=True)
    shutil.rmtree(folder / ".trainer", ignore_errors=True)
    run.log = controller.frame()
    write_parquet_atomic(pa.Table.from_pandas(run.log, preserve_index=False), folder / "training_log.parquet")
    run.plot_png = reward_plot_png(run.log)
    write_bytes_atomic(run.plot_png, folder / "reward_per_stage.png")
    record = {
        "spec": asdict(spec),
        "base": asdict(start),
        "generation": run.generation,
        "curriculum": {"folder": str(curriculum.folder), "label_key": manifest.get("label_key")},
        "stages": run.summary().to_dict(orient="records"),
    }
    write_text_atomic(json.dumps(record, indent=2, default=str), folder / "run.json")
    return run
