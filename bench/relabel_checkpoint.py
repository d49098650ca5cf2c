"""Relabelling a changed target with per-problem priors from the previous labels, on real rollouts.

    PYTHONPATH=. .venv/bin/python bench/relabel_checkpoint.py [--problems 150] [--bank 32] [--reference 32]
        [--max-tokens 96] [--engine vllm] [--temperature 1.0] [--checkpoint DIR | --train-steps N]
        [--other-model DIR] [--cases checkpoint temperature other_model]

The previous labels are the embedded SmolLM2's at T = 0.8: uniform-16 over reasoning-gym problems.
Three changes of target are relabelled: `checkpoint` (a GRPO checkpoint folder, --checkpoint, or
one trained here for --train-steps GRPO steps by `staged_rl_policy` on the previous labels' curriculum),
`temperature` (SmolLM2 at --temperature) and `other_model` (another model folder, --other-model);
a case whose folder is not given or absent is skipped, with the reason in the JSON.

Each target gets a bank of --bank rollouts and --reference more per problem, generated once into
the rollout store under $GRADUS_HOME (reruns generate nothing). The policies are simulated by
reading the bank in sample-index order: (a) uniform-16, (b) adaptive under the pool prior, (c)
adaptive with per-problem priors from the previous labels (`pipeline.labels.priors.SourcePriors`:
the source's strength fitted on the first round); both adaptive policies capped at the bank. Each
is compared with the class read from the disjoint reference rollouts, plainly and weighted by the
reference pass rate's p(1 - p). (c) is run at a ladder of rollout prices and the cheapest whose
weighted agreement reaches (a)'s gives `ratio_<case>` = its rollouts / (a)'s (None if none does).
`changed_share_<case>`: problems whose reference class differs from the previous target's.

Prints a table, then one JSON object of the figures on its last line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parent))
from adaptive_budget import PRIOR_PRICES, OutcomeStreams, real_pool, signal_weights  # noqa: E402

from pipeline.core.model import ModelSpec, embedded_model, resolve_model  # noqa: E402
from pipeline.core.progress import Progress  # noqa: E402
from pipeline.core.storage import gradus_home  # noqa: E402
from pipeline.difficulty.strata import Strata  # noqa: E402
from pipeline.engines import create_engine  # noqa: E402
from pipeline.engines.base import SamplingConfig  # noqa: E402
from pipeline.labels.priors import PriorSource, SourcePriors  # noqa: E402
from pipeline.rollouts.allocation import AllocationConfig, run_allocation  # noqa: E402
from pipeline.rollouts.store import RolloutStore, missing_requests  # noqa: E402
from pipeline.verify.scoring import score_rollouts  # noqa: E402
from pipeline.verify.verification import VerifierPool  # noqa: E402

UNIFORM_N = 16
CASES = ("checkpoint", "temperature", "other_model")
BASE_TEMPERATURE = 0.8


def outcomes(problems: pd.DataFrame, model: ModelSpec, sampling: SamplingConfig, total: int, engine: str,
             pool: VerifierPool, home: Path) -> NDArray[np.bool_]:
    """Verified outcomes, problems x `total` sample indices, generating what the store lacks."""
    store = RolloutStore(home, model, sampling, engine=engine)
    ids = problems["problem_id"].tolist()
    todo = sorted(missing_requests(problems, total, store.coverage(ids, total)), key=lambda r: r.sample_index)
    print(f"{model.key} T={sampling.temperature}: {len(ids)} x {total} rollouts, {len(todo)} to generate", flush=True)
    if todo:
        bar = Progress("rollouts", len(todo), lambda line: print(line, flush=True), unit="rollouts", every_s=30)
        with create_engine(engine, model) as running:
            running.generate(todo, sampling, lambda done, _, tok_s: bar.update(done, f"{tok_s:.0f} tok/s"),
                             on_batch=store.append)
    rows = store.load(ids, total)
    passed = score_rollouts(problems, rows, pool, "auto")["passed"].to_numpy(bool)
    matrix = np.zeros((len(ids), total), dtype=bool)
    matrix[pd.Index(ids).get_indexer(rows["problem_id"]), rows["sample_index"].to_numpy()] = passed
    return matrix


def relabel_case(previous: NDArray[np.bool_], new: NDArray[np.bool_], bank: int, strata: Strata) -> dict:
    """The three policies on one change of target (see the module docstring)."""
    reference = new[:, bank:]
    ref_s, ref_n = reference.sum(axis=1), np.full(len(new), reference.shape[1])
    truth = strata.observed_class(ref_s, ref_n)
    signal = signal_weights(ref_s / ref_n)
    prev_ref = previous[:, bank:]
    changed = strata.observed_class(prev_ref.sum(axis=1), np.full(len(new), prev_ref.shape[1])) != truth
    labels = previous[:, :UNIFORM_N]
    source = PriorSource("previous", labels.sum(axis=1).astype(float), np.full(len(new), float(UNIFORM_N)))
    streams = OutcomeStreams.from_outcomes(new[:, :bank])

    def scored(s: NDArray, n: NDArray) -> dict:
        agree = strata.observed_class(s, n) == truth
        return {"rollouts": int(n.sum()), "agreement": round(float(agree.mean()), 4),
                "weighted": round(float((agree * signal).sum() / signal.sum()), 4)}

    uniform = scored(new[:, :UNIFORM_N].sum(axis=1), np.full(len(new), UNIFORM_N))
    base = AllocationConfig(policy="adaptive", max_samples=bank)
    pooled = run_allocation(streams.sampler(), len(new), strata, base)
    ladder = []
    for price in PRIOR_PRICES:
        make = SourcePriors([source])
        result = run_allocation(streams.sampler(), len(new), strata, replace(base, min_gain=price), priors=make)
        ladder.append({**scored(result.successes, result.trials), "price": price,
                       "strength": round(float(make.strengths[0]), 2), "rejected": int(result.priors.rejected.sum())})
    reaching = [r for r in ladder if r["weighted"] >= uniform["weighted"]]
    best = min(reaching, key=lambda r: r["rollouts"]) if reaching else None
    default = ladder[0]  # the default price
    return {"changed_share": round(float(changed.mean()), 4), "uniform16": uniform,
            "adaptive_pool": scored(pooled.successes, pooled.trials), "adaptive_priors": default,
            "adaptive_priors_matched": best, "ratio": round(best["rollouts"] / uniform["rollouts"], 4) if best else None,
            "ratio_pool": round(pooled.total_rollouts / uniform["rollouts"], 4)}


def trained_checkpoint(problems: pd.DataFrame, previous: NDArray[np.bool_], model: ModelSpec,
                       sampling: SamplingConfig, home: Path, steps: int) -> tuple[Path, float | None]:
    """The last checkpoint of a GRPO run of `model` for `steps` optimizer steps over a three-stage
    curriculum of the previous labels (uniform-16 counts), trained through `staged_rl_policy` as a
    user would; (folder, seconds trained), seconds None when an earlier run's checkpoint is reused."""
    from dagster import DagsterInstance, materialize

    from assets.deployment import resources
    from assets.training import staged_rl_policy
    from pipeline.curriculum.build import CurriculumSpec, build_curriculum
    from pipeline.labels.pass_rates import LabelTarget, pass_rates_from_counts

    run = f"relabel-bench-{len(problems)}-{steps}"
    finished = sorted((home / "checkpoints" / run).glob("stage_*/config.json"))
    if finished:
        return finished[-1].parent, None
    counts = previous[:, :UNIFORM_N]
    labels = pass_rates_from_counts(problems["problem_id"].tolist(), counts.sum(1), np.full(len(counts), UNIFORM_N),
                                    LabelTarget(model, sampling, "bench"))
    provenance = {"model": {"id": model.model_id, "revision": model.revision},
                  "sampling": {"temperature": sampling.temperature, "top_p": sampling.top_p,
                               "max_tokens": sampling.max_tokens, "seed": sampling.seed},
                  "extraction_policy": "auto"}
    build_curriculum(problems, labels, CurriculumSpec(run), home, provenance)
    config = {"ops": {"staged_rl_policy": {"config": {
        "curriculum": run, "run_name": run, "schedule": {"steps_per_stage": max(1, steps // 3)},
        "prompts_per_step": 4, "num_generations": 4, "learning_rate": 2e-5}}}}
    started = time.perf_counter()
    with DagsterInstance.ephemeral() as instance:
        result = materialize([staged_rl_policy], instance=instance, run_config=config,
                             resources=resources({"GRADUS_HOME": str(home), "GRADUS_MODEL_PATH": model.path}))
    seconds = time.perf_counter() - started
    [event] = result.asset_materializations_for_node("staged_rl_policy")
    return Path(event.metadata["checkpoints"].value[-1]["path"]), seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=150, help="problems (spread over the generators and levels)")
    parser.add_argument("--bank", type=int, default=32, help="rollouts per problem the policies draw from")
    parser.add_argument("--reference", type=int, default=32, help="disjoint rollouts per problem for the reference")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--engine", default="vllm", help="vllm or transformers")
    parser.add_argument("--temperature", type=float, default=1.0, help="the temperature case's new temperature")
    parser.add_argument("--checkpoint", default="", help="a GRPO checkpoint folder of SmolLM2 (checkpoint case)")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES), help="which changes of target to run")
    parser.add_argument("--train-steps", type=int, default=0,
                        help="without --checkpoint: train one here, this many GRPO steps on the previous labels' "
                        "curriculum (reused on a rerun)")
    parser.add_argument("--other-model", default="", help="another model's HF folder, e.g. Gemma 3 270M")
    args = parser.parse_args(argv)
    if args.bank < UNIFORM_N:
        parser.error(f"--bank must be at least {UNIFORM_N} (uniform-{UNIFORM_N} reads it)")

    home = gradus_home()
    smollm2 = embedded_model(home)
    problems = real_pool(-(-args.problems // 9)).head(args.problems)
    total = args.bank + args.reference
    sampling = SamplingConfig(temperature=BASE_TEMPERATURE, top_p=1.0, max_tokens=args.max_tokens, seed=0)
    strata = Strata()
    figures: dict = {"problems": len(problems), "bank": args.bank, "reference": args.reference,
                     "max_tokens": args.max_tokens, "engine": args.engine}
    started = time.perf_counter()
    with VerifierPool(workers=2) as pool:
        previous = outcomes(problems, smollm2, sampling, total, args.engine, pool, home)
        if args.train_steps and not args.checkpoint and "checkpoint" in args.cases:
            folder, seconds = trained_checkpoint(problems, previous, smollm2, sampling, home, args.train_steps)
            args.checkpoint = str(folder)
            figures |= {"train_steps": args.train_steps, "train_seconds": None if seconds is None else round(seconds, 1)}
            print(f"checkpoint: {folder}, " + (f"trained in {seconds:.0f} s" if seconds else "reused"))
        cases = {"checkpoint": (args.checkpoint, sampling), "temperature": ("embedded", replace(
            sampling, temperature=args.temperature)), "other_model": (args.other_model, sampling)}
        for case, (folder, case_sampling) in ((c, cases[c]) for c in args.cases):
            if folder != "embedded" and not (folder and Path(folder).is_dir()):
                figures[f"skipped_{case}"] = (f"no model folder given (--{case.replace('_', '-')})" if not folder
                                              else f"{folder} is not a folder")
                print(f"{case}: skipped, {figures[f'skipped_{case}']}")
                continue
            model = smollm2 if folder == "embedded" else resolve_model(folder, None, None, home)
            result = relabel_case(previous, outcomes(problems, model, case_sampling, total, args.engine, pool, home),
                                  args.bank, strata)
            print(f"{case}: {json.dumps(result)}")
            figures |= {f"changed_share_{case}": result["changed_share"], f"ratio_{case}": result["ratio"],
                        f"ratio_pool_{case}": result["ratio_pool"],
                        f"agreement_{case}": {k: result[k] for k in ("uniform16", "adaptive_pool", "adaptive_priors",
                                                                     "adaptive_priors_matched")}}
    figures["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
