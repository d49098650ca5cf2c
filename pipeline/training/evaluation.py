"""Evaluating trained policies: pass@1 and pass@k of the base model and of every checkpoint of a
training run, on an evaluation set disjoint from the curriculum.

Rollouts go through the same rollout cache, engines and verifiers as labelling, keyed by each
checkpoint's content-hash revision, so evaluating a policy twice generates nothing the second time.
pass@k is the unbiased estimator of Chen et al. (2021) from n samples per problem with c passing,
1 - C(n - c, k) / C(n, k), averaged over problems; pass@1 is then c / n.

The result is one row per (policy, benchmark, category), plus a row per policy and benchmark with
category `all` (every problem of that set): `EVALUATION_COLUMNS`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from math import comb
from pathlib import Path

import pandas as pd

from pipeline.core.model import ModelSpec
from pipeline.core.plots import axes, png
from pipeline.core.progress import Progress
from pipeline.core.storage import StorageLayout, within
from pipeline.curriculum.build import MANIFEST, curriculum_problem_ids
from pipeline.difficulty.strata import Strata
from pipeline.engines.base import Engine, SamplingConfig
from pipeline.ingest.benchmarks import EvaluationSet, default_evaluation_set, load_evaluation_sets
from pipeline.ingest.sources import DEFAULT_GENERATORS
from pipeline.rollouts.allocation import AllocationConfig
from pipeline.rollouts.sampling import sample_rollouts
from pipeline.rollouts.store import RolloutStore
from pipeline.training.run_record import RUN_RECORD, RunRecord
from pipeline.verify.scoring import score_rollouts
from pipeline.verify.verification import VerifierPool

log = logging.getLogger(__name__)

ALL = "all"
"""The category of a policy's row over every problem of the evaluation set."""
EVALUATION_COLUMNS = ("policy", "phase", "stage", "step", "model_key", "benchmark", "category", "problems", "samples",
                      "k", "pass_at_1", "pass_at_k")


@dataclass(frozen=True)
class EvaluationSpec:
    """Which training run to evaluate, on what, and with how many samples per problem."""

    run_name: str = field(default="", metadata={
        "help": "run folder under `$GRADUS_HOME/checkpoints/` (empty: the run whose run.json is newest)"})
    benchmarks: tuple[EvaluationSet, ...] = field(default=(default_evaluation_set(DEFAULT_GENERATORS),), metadata={
        "help": "evaluation sets; the default draws the default generators with held-out seeds. Problems that "
                "are also in the run's curriculum are left out"})
    samples_per_problem: int = field(default=8, metadata={
        "help": "completions per problem (n); pass@1 and pass@k are estimated from the same samples"})
    k: int = field(default=4, metadata={"help": "the k of pass@k (at most samples_per_problem)"})

    def __post_init__(self) -> None:
        if self.samples_per_problem < 1:
            raise ValueError(f"samples_per_problem must be at least 1, got {self.samples_per_problem}")
        if not self.benchmarks:
            raise ValueError("give at least one evaluation set in benchmarks")
        if not 1 <= self.k <= self.samples_per_problem:
            raise ValueError(f"k must be between 1 and samples_per_problem ({self.samples_per_problem}), got {self.k}")


@dataclass(frozen=True)
class Policy:
    """One policy to evaluate: the base model (phase 0, step 0) or a checkpoint of a run."""

    name: str
    model: ModelSpec
    phase: int
    stage: int | None
    step: int
    """Training steps taken before this policy was saved (cumulative over phases)."""


def pass_at_k(samples: int, correct: int, k: int) -> float:
    """Unbiased pass@k from `samples` draws of which `correct` passed."""
    if not 0 <= correct <= samples or not 1 <= k <= samples:
        raise ValueError(f"need 0 <= correct <= samples and 1 <= k <= samples, got {correct}, {samples}, {k}")
    if samples - correct < k:
        return 1.0
    return 1.0 - comb(samples - correct, k) / comb(samples, k)


def latest_run(layout: StorageLayout) -> Path:
    """The training run folder whose `run.json` was written last."""
    records = sorted(layout.checkpoints.glob(f"*/{RUN_RECORD}"), key=lambda p: p.stat().st_mtime)
    if not records:
        raise FileNotFoundError(
            f"no training run under {layout.checkpoints}: materialize `staged_rl_policy` (train_job) first, "
            "or name a run folder in run_name"
        )
    return records[-1].parent


def run_policies(folder: Path) -> list[Policy]:
    """The base model and every checkpoint a run recorded in its `run.json`, in training order."""
    record = RunRecord.read(folder)
    base = record.base
    policies = [Policy("base", base, 0, None, 0)]
    step = 0
    for stage in sorted(record.stages, key=lambda s: s.phase):
        step += stage.steps
        checkpoint = ModelSpec(stage.checkpoint, base.model_id, stage.revision)
        if not Path(checkpoint.path).is_dir():
            raise FileNotFoundError(f"checkpoint {checkpoint.path} of run {folder.name} is gone: retrain the run")
        policies.append(Policy(f"stage_{stage.phase}", checkpoint, stage.phase, stage.stage, step))
    return policies


def training_problem_ids(folder: Path) -> set[str]:
    """The problems of the curriculum a run trained on (empty when that curriculum is gone)."""
    curriculum = Path(RunRecord.read(folder).curriculum_folder)
    return curriculum_problem_ids(curriculum) if (curriculum / MANIFEST).is_file() else set()


def evaluation_problems(
    sets: Sequence[EvaluationSet], home: Path, exclude_ids: Collection[str] = ()
) -> pd.DataFrame:
    """The evaluation sets' problems (with a `benchmark` column), without any that are also
    training problems; a problem in two sets counts once, in the first."""
    problems, _ = load_evaluation_sets(sets, home)
    kept = problems[~problems["problem_id"].isin(set(exclude_ids))]
    kept = kept.drop_duplicates("problem_id").reset_index(drop=True)
    empty = sorted({s.name for s in sets} - set(kept["benchmark"]))
    if empty:
        raise ValueError(f"evaluation set(s) {empty} have no problems outside the curriculum: draw them with "
                         "other seeds or generators")
    return kept


def _summarise(policy: Policy, rewards: pd.DataFrame, problems: pd.DataFrame, k: int) -> pd.DataFrame:
    counts = rewards.groupby("problem_id")["passed"].agg(["sum", "count"])
    info = problems.set_index("problem_id").reindex(counts.index)
    per_problem = pd.DataFrame({
        "benchmark": info["benchmark"].to_numpy(),
        "category": info["category"].to_numpy(),
        "samples": counts["count"].to_numpy(),
        "pass_at_1": counts["sum"].to_numpy() / counts["count"].to_numpy(),
        "pass_at_k": [pass_at_k(int(n), int(c), k) for c, n in zip(counts["sum"], counts["count"])],
    })
    rows = []
    for benchmark, problems_of in per_problem.groupby("benchmark", sort=False):
        for category, part in [(ALL, problems_of), *sorted(problems_of.groupby("category"))]:
            rows.append({
                "policy": policy.name, "phase": policy.phase, "stage": policy.stage, "step": policy.step,
                "model_key": policy.model.key, "benchmark": benchmark, "category": category, "problems": len(part),
                "samples": int(part["samples"].sum()), "k": k,
                "pass_at_1": float(part["pass_at_1"].mean()), "pass_at_k": float(part["pass_at_k"].mean()),
            })
    return pd.DataFrame(rows, columns=list(EVALUATION_COLUMNS))


def evaluate_policies(
    policies: Sequence[Policy],
    problems: pd.DataFrame,
    spec: EvaluationSpec,
    sampling: SamplingConfig,
    home: Path,
    engine_for: Callable[[ModelSpec], Engine],
    engine_name: str,
    pool: VerifierPool,
    extraction_policy: str = "auto",
    progress: Callable[[str], None] = log.info,
) -> pd.DataFrame:
    """pass@1 and pass@k of each policy on `problems` (`EVALUATION_COLUMNS`), sampling
    `spec.samples_per_problem` completions per problem with `sampling` into each policy's rollout
    cache; `engine_for(model)` is called only when a policy has rollouts left to generate."""
    allocation = AllocationConfig(policy="uniform", samples_per_problem=spec.samples_per_problem)
    done = Progress("evaluation", len(policies), progress, unit="policies", every_s=0)
    frames = []
    for policy in policies:
        store = RolloutStore(home, policy.model, sampling, engine_name)
        report = sample_rollouts(problems, store, lambda m=policy.model: engine_for(m), allocation, Strata(),
                                 log=lambda line, name=policy.name: progress(f"{name}: {line}"))
        rewards = score_rollouts(problems, store.load_allocated(report.allocation), pool, extraction_policy)
        frame = _summarise(policy, rewards, problems, spec.k)
        frames.append(frame)
        overall = frame[frame["category"] == ALL].iloc[0]
        done.advance(extra=f"{policy.name} (step {policy.step}) pass@1 {overall['pass_at_1']:.3f}, "
                           f"pass@{spec.k} {overall['pass_at_k']:.3f}, {report.generated} rollouts generated")
    return pd.concat(frames, ignore_index=True)


def evaluation_plot_png(frame: pd.DataFrame, title: str = "evaluation accuracy by training step") -> bytes:
    """pass@1 (solid) and pass@k (dashed) over each benchmark's problems against training step
    (the base model at step 0), with each category's pass@1 as a thin line."""
    fig, ax = axes(6.4, 3.4)
    k = int(frame["k"].iloc[0]) if len(frame) else 1
    for (benchmark, category), part in frame[frame["category"] != ALL].groupby(["benchmark", "category"]):
        part = part.sort_values("step")
        ax.plot(part["step"], part["pass_at_1"], linewidth=0.8, alpha=0.6, label=f"{category} pass@1")
    colours = ("black", "tab:red", "tab:blue", "tab:green")
    for i, (benchmark, overall) in enumerate(frame[frame["category"] == ALL].groupby("benchmark", sort=False)):
        overall = overall.sort_values("step")
        colour = colours[i % len(colours)]
        ax.plot(overall["step"], overall["pass_at_1"], marker="o", linewidth=2.2, color=colour,
                label=f"{benchmark}: pass@1")
        ax.plot(overall["step"], overall["pass_at_k"], marker="s", linewidth=2.2, color=colour, linestyle="dashed",
                label=f"{benchmark}: pass@{k}")
        for _, row in overall.iterrows():
            ax.annotate(row["policy"], (row["step"], row["pass_at_1"]), textcoords="offset points",
                        xytext=(4, 6), fontsize=7)
    ax.set_xlabel("training step (base model = 0)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(title)
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return png(fig)


def run_folder(layout: StorageLayout, run_name: str) -> Path:
    """The named run folder under `checkpoints/`, or the newest run when the name is empty."""
    return within(layout.checkpoints, run_name) if run_name else latest_run(layout)

