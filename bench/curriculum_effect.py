"""Does the curriculum pay? The same GRPO run on (a) the staged curriculum easy → hard, (b) the same
problems shuffled into one stage, (c) the raw labelled pool with no difficulty filter.

    nice -n 10 .venv/bin/python bench/curriculum_effect.py [--preset cpu|gpu] [--model-path DIR]
        [--steps N] [--seeds 0 1] [--home DIR] ...

Everything is real: the model (SmolLM2-135M-Instruct by default), vLLM for labelling and
evaluation, TRL GRPO for training, the verifiers that label the data as rewards.

1. Pool: reasoning-gym generators and levels chosen to spread SmolLM2's pass rates (easy levels it
   solves sometimes, harder ones it never solves), built here so the bench does not depend on the
   default pool.
2. Labels: `--label-samples` rollouts per problem with the base model; `--fresh-samples` more
   (sample indices after the labels') measure informative groups on fresh samples, free of the
   selection bias of label-based figures.
3. Three curricula from the same labels (`pipeline.curriculum.build.build_curriculum`): `staged`
   (default strata, solved and unsolved problems excluded), `shuffled` (the same problems, one
   stage) and `pool` (every labelled problem, one stage).
4. Training: `pipeline.training.train_curriculum` on each, with identical steps, seeds and GRPO
   settings (the staged run splits its steps evenly over its non-empty stages).
5. Evaluation: `pipeline.training.evaluation.evaluate_policies` on held-out draws of the same generators
   (other seeds; problems also in the pool removed), for the base model and each run's final
   checkpoint.

Informative fractions (groups of G completions with non-zero reward variance) are reported three
ways: from labels (1 - p^G - (1 - p)^G, optimistic for the curriculum), from fresh base-model
rollouts, and as TRL saw them during training (1 - frac_reward_zero_std, per step). The top-level
`informative_fraction_*` keys are the fresh-rollout figures.

`--preset gpu` sizes the run for one GPU (a larger model via `--model-path`, which it requires,
longer completions, more problems, steps and seeds; generation through vLLM). It is documented,
not run in CI.

Prints progress, a table, then one JSON object of the figures on its last line.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from pipeline.core.model import ModelSpec, embedded_model, resolve_model
from pipeline.core.records import Problem
from pipeline.core.storage import StorageLayout
from pipeline.curriculum.build import CurriculumSpec, build_curriculum, provenance
from pipeline.curriculum.informative import expected_informative, measured_informative
from pipeline.difficulty.strata import Strata
from pipeline.engines import Engine, SamplingConfig, create_engine
from pipeline.ingest.benchmarks import EvaluationSet, heldout
from pipeline.ingest.sources import ReasoningGymSource, load_problems
from pipeline.labels.pass_rates import LabelTarget, pass_rates
from pipeline.rollouts.allocation import AllocationConfig
from pipeline.rollouts.sampling import sample_rollouts
from pipeline.rollouts.store import RolloutStore
from pipeline.training import SamplerSpec, StageSchedule, TrainingSpec, train_curriculum
from pipeline.training.evaluation import (
    ALL,
    EvaluationSpec,
    Policy,
    evaluate_policies,
    evaluation_problems,
    run_policies,
)
from pipeline.verify.scoring import score_rollouts
from pipeline.verify.verification import VERIFIER_VERSION, VerifierPool

GENERATORS = (("basic_arithmetic", (0, 1, 2)), ("chain_sum", (0, 1, 2)), ("products", (0, 1, 2)))
"""Level 0 of each is sometimes solved by SmolLM2; the higher levels mostly never are."""
EXTRACTION = "auto"
CONDITIONS = {
    "staged": Strata(),
    "shuffled": Strata((1.0, 0.0)),
    "pool": Strata((1.0, 0.0), exclude_solved=False, exclude_unsolved=False),
}


@dataclass(frozen=True)
class Preset:
    per_level: int
    eval_per_level: int
    label_samples: int
    fresh_samples: int
    eval_samples: int
    k: int
    steps: int
    seeds: tuple[int, ...]
    prompts_per_step: int
    group_size: int
    max_tokens: int
    learning_rate: float
    label_engine: str
    eval_engine: str
    generation: str


PRESETS = {
    # About 45 minutes on a quiet 2-core CPU: a GRPO step of 8 completions takes ~11 s there and an
    # evaluation ~35 s, so 3 seeds x 3 arms x 20 steps. The figures in docs/benchmarks.md are --steps 8 (21 min).
    # Evaluation uses transformers: a vLLM start per checkpoint costs more than it saves at this size.
    "cpu": Preset(per_level=3, eval_per_level=2, label_samples=6, fresh_samples=4, eval_samples=4, k=2, steps=20,
                  seeds=(0, 1, 2), prompts_per_step=2, group_size=4, max_tokens=48, learning_rate=1e-5,
                  label_engine="vllm", eval_engine="transformers", generation="transformers"),
    # One GPU: a 0.5-1.5B instruct model, TRL generating through colocated vLLM.
    "gpu": Preset(per_level=40, eval_per_level=20, label_samples=16, fresh_samples=16, eval_samples=16, k=8,
                  steps=300, seeds=(0, 1, 2), prompts_per_step=16, group_size=8, max_tokens=384, learning_rate=1e-6,
                  label_engine="vllm", eval_engine="vllm", generation="auto"),
}


class Engines:
    """One engine at a time, restarted when the model changes (vLLM serves one set of weights)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.engine: Engine | None = None
        self.start_s: list[float] = []

    def __call__(self, model: ModelSpec) -> Engine:
        if self.engine is not None and self.engine.model != model:
            self.close()
        if self.engine is None:
            started = time.perf_counter()
            self.engine = create_engine(self.kind, model)
            self.start_s.append(time.perf_counter() - started)
        return self.engine

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def pool_problems(per_level: int, verifier: VerifierPool, heldout_seeds: bool = False) -> pd.DataFrame:
    sources = [ReasoningGymSource(name, levels, per_level) for name, levels in GENERATORS]
    if heldout_seeds:
        sources = [heldout(s) for s in sources]
    return Problem.to_frame(load_problems(sources, pool=verifier).problems)


def spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"mean": round(statistics.fmean(values), 4),
            "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
            "values": [round(v, 4) for v in values]}


def finite(value: float) -> float | None:
    return round(value, 2) if math.isfinite(value) else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu",
                        help="cpu: ~45 min on a 2-core CPU with SmolLM2-135M; gpu: one GPU and a larger "
                             "--model-path (not run in CI)")
    parser.add_argument("--model-path", default="", help="local HF model folder (default: embedded SmolLM2-135M)")
    parser.add_argument("--home", default="", help="GRADUS_HOME for the run (default: a temporary folder)")
    for name in ("per_level", "eval_per_level", "label_samples", "fresh_samples", "eval_samples", "k", "steps",
                 "prompts_per_step", "group_size", "max_tokens"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=None, help="override the preset")
    parser.add_argument("--learning-rate", type=float, default=None, help="override the preset")
    parser.add_argument("--label-engine", choices=("vllm", "transformers"), default=None, help="override the preset")
    parser.add_argument("--eval-engine", choices=("vllm", "transformers"), default=None, help="override the preset")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="override the preset")
    parser.add_argument("--conditions", nargs="+", choices=list(CONDITIONS), default=list(CONDITIONS),
                        help="which arms to train (all three are labelled and built either way)")
    args = parser.parse_args()
    preset = PRESETS[args.preset]
    overrides = {k: v for k, v in vars(args).items() if k in Preset.__dataclass_fields__ and v is not None}
    if args.seeds:
        overrides["seeds"] = tuple(args.seeds)
    preset = replace(preset, **overrides)
    if args.preset == "gpu" and not args.model_path:
        parser.error("--preset gpu needs --model-path (a local HF folder of a larger instruct model)")

    started = time.perf_counter()
    scratch = None if args.home else tempfile.TemporaryDirectory(prefix="gradus-curriculum-effect-")
    home = Path(args.home or scratch.name)
    layout = StorageLayout(str(home))
    base = resolve_model(args.model_path, home=home) if args.model_path else embedded_model(home)
    sampling = SamplingConfig(max_tokens=preset.max_tokens)
    target = LabelTarget(base, sampling, VERIFIER_VERSION, EXTRACTION)
    G = preset.group_size
    say(f"model {base.key}, preset {args.preset}: {preset}")
    label_engine = Engines(preset.label_engine)
    engines = Engines(preset.eval_engine)
    timings: dict[str, float] = {}

    with VerifierPool() as verifier:
        # --- labels and fresh rollouts -----------------------------------------------------------
        t = time.perf_counter()
        problems = pool_problems(preset.per_level, verifier)
        store = RolloutStore(home, base, sampling, preset.label_engine)
        report = sample_rollouts(problems, store, lambda: label_engine(base),
                                 AllocationConfig(samples_per_problem=preset.label_samples + preset.fresh_samples),
                                 Strata(), log=say)
        label_engine.close()
        rewards = score_rollouts(problems, store.load_allocated(report.allocation), verifier, EXTRACTION)
        label_rewards = rewards[rewards["sample_index"] < preset.label_samples]
        fresh_rewards = rewards[rewards["sample_index"] >= preset.label_samples]
        labels = pass_rates(label_rewards, target)
        timings["label_s"] = time.perf_counter() - t
        say(f"labelled {len(problems)} problems ({report.generated} rollouts generated, "
            f"{report.tokens_per_second:.0f} tok/s): mean pass rate {labels['pass_rate'].mean():.3f}")

        # --- evaluation set and the base model's score -------------------------------------------
        t = time.perf_counter()
        eval_spec = EvaluationSpec(
            benchmarks=(EvaluationSet("curriculum_effect_heldout", generators=tuple(
                heldout(ReasoningGymSource(n, lv, preset.eval_per_level)) for n, lv in GENERATORS)),),
            samples_per_problem=preset.eval_samples, k=preset.k)
        eval_set = evaluation_problems(eval_spec.benchmarks, home, exclude_ids=set(problems["problem_id"]))

        def evaluate(policies: list[Policy]) -> pd.DataFrame:
            return evaluate_policies(policies, eval_set, eval_spec, sampling, home, engines, preset.eval_engine,
                                     verifier, EXTRACTION, say)

        before = evaluate([Policy("base", base, 0, None, 0)])
        engines.close()  # training needs the cores and the memory
        timings["eval_base_s"] = time.perf_counter() - t

        # --- curricula ---------------------------------------------------------------------------
        made = provenance(target, "measured", measured=labels)
        manifests = {name: build_curriculum(problems, labels, CurriculumSpec(name=name, strata=strata), home, made)
                     for name, strata in CONDITIONS.items()}
        members = {name: pd.concat([pd.read_parquet(layout.curriculum(name) / s["file"], columns=["problem_id"])
                                    for s in m["stages"] if s["rows"]])["problem_id"]
                   for name, m in manifests.items()}
        phases = sum(1 for s in manifests["staged"]["stages"] if s["rows"])
        per_stage = max(1, preset.steps // phases)
        steps = per_stage * phases
        say(f"curricula: staged {[s['rows'] for s in manifests['staged']['stages']]} "
            f"(excluded {manifests['staged']['excluded']}), shuffled {len(members['shuffled'])}, "
            f"pool {len(members['pool'])}; {steps} steps each ({phases} stages × {per_stage} for staged)")

        rate = labels.set_index("problem_id")["pass_rate"]
        informative = {}
        for name in ("pool", "shuffled"):
            ids = set(members[name])
            informative[name] = {
                "labels": expected_informative(rate[rate.index.isin(ids)], G),
                "fresh": measured_informative(fresh_rewards[fresh_rewards["problem_id"].isin(ids)], G),
            }

        say("informative groups (G={}): ".format(G) + "; ".join(
            f"{name}: labels {f['labels'].fraction:.3f}, fresh rollouts {f['fresh'].fraction:.3f} "
            f"({f['fresh'].groups:.0f} groups)" for name, f in informative.items()))

        # --- training and evaluation -------------------------------------------------------------
        runs: list[dict] = []
        finals: list[pd.DataFrame] = []
        for seed in preset.seeds:
            for name in args.conditions:
                t = time.perf_counter()
                spec = TrainingSpec(
                    curriculum=name, run_name=f"{name}-seed{seed}", sampler=SamplerSpec("sequential"),
                    schedule=StageSchedule("fixed", steps_per_stage=per_stage if name == "staged" else steps),
                    prompts_per_step=preset.prompts_per_step, num_generations=G,
                    learning_rate=preset.learning_rate, generation=preset.generation, seed=seed,
                )
                run = train_curriculum(spec, base, verifier, layout, say)
                train_s = time.perf_counter() - t
                final = run_policies(run.folder)[-1]
                final = replace(final, name=f"{name}-seed{seed}")
                t = time.perf_counter()
                scored = evaluate([final])
                engines.close()
                eval_s = time.perf_counter() - t
                finals.append(scored.assign(condition=name, seed=seed))
                zero_std = run.log["frac_reward_zero_std"] if "frac_reward_zero_std" in run.log else pd.Series(dtype=float)
                overall = scored[scored["category"] == ALL].iloc[0]
                runs.append({
                    "condition": name, "seed": seed, "steps": len(run.log),
                    "train_s": round(train_s, 1), "step_s": round(float(run.log["step_s"].mean()), 2),
                    "eval_s": round(eval_s, 1), "mean_train_reward": round(float(run.log["reward"].mean()), 4),
                    "informative_fraction_training": round(float(1 - zero_std.mean()), 4) if len(zero_std) else None,
                    "pass_at_1": round(float(overall["pass_at_1"]), 4),
                    f"pass_at_{preset.k}": round(float(overall["pass_at_k"]), 4),
                })
                say(f"{name} seed {seed}: {runs[-1]}")
    engines.close()

    runs_frame = pd.DataFrame(runs)
    print(runs_frame.to_string(index=False))
    finals_frame = pd.concat(finals, ignore_index=True)
    print(finals_frame[["condition", "seed", "category", "problems", "pass_at_1", "pass_at_k"]].round(3).to_string(index=False))
    base_all = before[before["category"] == ALL].iloc[0]
    print(before[["category", "problems", "pass_at_1", "pass_at_k"]].round(3).to_string(index=False))

    def after(condition: str, column: str) -> dict[str, float]:
        return spread(runs_frame.loc[runs_frame["condition"] == condition, column].astype(float).tolist())

    def training_informative(condition: str) -> dict[str, float] | None:
        values = runs_frame.loc[runs_frame["condition"] == condition, "informative_fraction_training"].dropna()
        return spread(values.astype(float).tolist()) if len(values) else None

    pool_fresh, cur_fresh = informative["pool"]["fresh"], informative["shuffled"]["fresh"]
    result = {
        "model": base.key,
        "preset": args.preset,
        "steps": steps,
        "seeds": list(preset.seeds),
        "group_size": G,
        "prompts_per_step": preset.prompts_per_step,
        "max_tokens": preset.max_tokens,
        "learning_rate": preset.learning_rate,
        "pool_problems": len(members["pool"]),
        "curriculum_problems": len(members["shuffled"]),
        "curriculum_stages": [s["rows"] for s in manifests["staged"]["stages"]],
        "excluded": manifests["staged"]["excluded"],
        "mean_label_pass_rate": round(float(labels["pass_rate"].mean()), 4),
        "informative_fraction_pool": round(pool_fresh.fraction, 4),
        "informative_fraction_curriculum": round(cur_fresh.fraction, 4),
        "informative_ratio": round(cur_fresh.fraction / pool_fresh.fraction, 3) if pool_fresh.fraction else None,
        "rollouts_per_informative_group_pool": finite(pool_fresh.rollouts_per_informative_group),
        "rollouts_per_informative_group_curriculum": finite(cur_fresh.rollouts_per_informative_group),
        "informative_fraction_labels": {"pool": round(informative["pool"]["labels"].fraction, 4),
                                        "curriculum": round(informative["shuffled"]["labels"].fraction, 4)},
        "informative_fraction_training": {c: training_informative(c) for c in CONDITIONS},
        "eval_problems": int(base_all["problems"]),
        "eval_samples": preset.eval_samples,
        "k": preset.k,
        "eval_before": {"pass_at_1": round(float(base_all["pass_at_1"]), 4),
                        "pass_at_k": round(float(base_all["pass_at_k"]), 4)},
        **{f"eval_after_{c}": {"pass_at_1": after(c, "pass_at_1"), "pass_at_k": after(c, f"pass_at_{preset.k}")}
           for c in CONDITIONS},
        "mean_train_reward": {c: after(c, "mean_train_reward") for c in CONDITIONS},
        "step_s": round(float(runs_frame["step_s"].mean()), 2),
        "label_engine_start_s": round(label_engine.start_s[0], 1) if label_engine.start_s else None,
        "eval_engine_start_s": round(statistics.fmean(engines.start_s), 1) if engines.start_s else None,
        **{k: round(v, 1) for k, v in timings.items()},
        "wall_s": round(time.perf_counter() - started, 1),
    }
    if scratch is not None:
        scratch.cleanup()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
