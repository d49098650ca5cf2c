"""The GRPO loop (TRL) around the phase controller: one phase per non-empty curriculum stage, a
loadable checkpoint after every phase, and the run's log, plot and record in its folder.

torch, transformers, datasets and TRL are imported inside the functions that use them, so the
package (and the Dagster definitions that import it) loads without them.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.core.model import ModelSpec, load_tokenizer
from pipeline.core.plots import axes, png
from pipeline.core.progress import Progress
from pipeline.core.storage import StorageLayout, within, write_bytes_atomic, write_parquet_atomic
from pipeline.training.checkpoints import save_checkpoint
from pipeline.training.pool import load_curriculum
from pipeline.training.rewards import reward_function
from pipeline.training.run_record import RunRecord, StageRecord
from pipeline.training.schedule import PhaseController
from pipeline.training.spec import GenerationSettings, TrainingSpec
from pipeline.verify.verification import VerificationTask, VerifierPool

log = logging.getLogger(__name__)

# TRL metrics copied into the training log when it reports them (kl only when beta > 0).
# frac_reward_zero_std is the share of problem groups whose completions all scored alike: they
# have zero advantage, so a step where it is 1 cannot move the weights.
TRL_METRICS = ("loss", "grad_norm", "kl", "entropy", "frac_reward_zero_std")


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
    settings: GenerationSettings
    """The sampling the run trained with (the labels' unless the spec overrode it)."""
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


def _phase_callback(controller: PhaseController, end_phase: Callable[[Any, Any], None], started: float,
                    tracker: Progress) -> Any:
    from transformers import TrainerCallback

    class PhaseCallback(TrainerCallback):
        """Times steps, copies TRL's metrics into the log, and ends phases as the schedule says."""

        step_started = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self.step_started = time.perf_counter()

        def on_step_end(self, args, state, control, model=None, processing_class=None, **kwargs):
            now = time.perf_counter()
            controller.annotate(state.global_step, {"step_s": now - self.step_started, "wall_s": now - started})
            reward = controller.records[-1]["reward"] if controller.records else float("nan")
            tracker.update(state.global_step, f"phase {controller.phase}/{controller.phases}, reward {reward:.3f}")
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
    spec: TrainingSpec, settings: GenerationSettings, folder: Path, use_vllm: bool, max_steps: int
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
        max_completion_length=settings.max_completion_length,
        temperature=settings.temperature,
        top_p=settings.top_p,
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
    layout: StorageLayout,
    progress: Callable[[str], None] = log.info,
) -> TrainingRun:
    """Train `start` with GRPO through the curriculum `spec.curriculum`, one phase per non-empty
    stage, saving `checkpoints/<run>/stage_<k>/` after phase k, plus `training_log.parquet`,
    `reward_per_stage.png` and `run.json` in the run folder."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, PrinterCallback

    curriculum = load_curriculum(layout, spec.curriculum)
    manifest = curriculum.manifest
    labelled_by = manifest.get("model", {}).get("revision")
    if labelled_by and labelled_by != start.revision:
        progress(f"warning: {spec.curriculum} was labelled by revision {labelled_by}, training starts from "
                 f"{start.key}: its stages measure another model's difficulty")
    settings = spec.generation_settings(manifest, str(curriculum.folder))
    folder = within(layout.checkpoints, spec.folder_name)
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
    config = _grpo_config(spec, settings, folder, use_vllm, max_steps)
    progress(f"training {start.key} on {curriculum.folder.name}: {table.num_rows} problems, "
             f"{controller.phases} phases, sampler {spec.sampler.kind}, schedule {spec.schedule.kind}, "
             f"generation {'vllm' if use_vllm else 'transformers'}; sampling temperature {settings.temperature}, "
             f"top_p {settings.top_p}, up to {settings.max_completion_length} tokens")

    model = AutoModelForCausalLM.from_pretrained(start.path, dtype=torch.float32)
    tokenizer = load_tokenizer(start)
    run = TrainingRun(start, folder, pd.DataFrame(), settings, generation="vllm" if use_vllm else "transformers")

    def end_phase(trained: Any, processing_class: Any) -> None:
        phase = controller.phase
        rewards = controller.phase_rewards()
        records = [r for r in controller.records if r["phase"] == phase]
        stage = sampler.stages[phase - 1] if spec.sampler.kind == "sequential" else None
        saving = time.perf_counter()
        checkpoint = save_checkpoint(
            trained, processing_class, folder / f"stage_{phase}", start,
            {"run": spec.folder_name, "curriculum": spec.curriculum, "phase": phase, "stage": stage,
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
        reward_funcs=reward_function(pool, settings.extraction_policy, controller),
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
    # The total is the schedule's cap: a threshold schedule may end phases sooner.
    tracker = Progress("training", max_steps, progress, unit="steps")
    trainer.add_callback(_phase_callback(controller, end_phase, time.perf_counter(), tracker))
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
    RunRecord(
        base=start,
        curriculum_folder=str(curriculum.folder),
        curriculum_label_key=manifest.get("label_key"),
        stages=tuple(StageRecord(**row) for row in run.summary().to_dict(orient="records")),
        spec=asdict(spec),
        generation_settings=asdict(settings),
        generation=run.generation,
    ).write(folder)
    return run
