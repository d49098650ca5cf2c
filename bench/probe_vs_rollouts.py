"""Hidden-state difficulty probe vs rollout labels on the embedded model: agreement and cost.

Labels 201 reasoning-gym problems (4 generators x 3 curriculum levels) twice:
- rollouts: N samples per problem with vLLM (T=0.8), last-number extraction, the generator's own
  scorer through `VerifierPool`; pass rate = successes / N;
- probe: last-prompt-token hidden states (transformers, one prefill per problem) and a ridge probe
  on the logit pass rate, scored by grouped CV (groups = generator/level, so a held-out fold is a
  generator at a level the probe never saw); a stricter leave-one-generator-out score is reported
  too. The layer is the one with the best held-out Spearman among 6 (a mild selection optimism;
  the per-layer table shows how much it matters).
A text-only baseline (character TF-IDF + ridge, same folds, same target) says how much of the
signal is just surface form.

`cost_ratio` = rollout labelling wall time / probe labelling wall time, both end to end (engine or
model start, generation + verification vs hidden states + predict), both measured in the run that
did the work. On a pool of a couple of hundred problems both are dominated by start-up, so the run
also measures each at steady state, after a warm-up, with start-ups reported apart:
- `rollout_s_per_problem`: generation + verification seconds per problem for 16 rollouts (the
  labelling run's steady-state rate, scaled linearly when `--rollouts` is not 16);
- `probe_s_per_problem`: hidden states at the probe's chosen layer only (the model runs up to that
  layer) + prediction, at the best of a few batch sizes (all are printed);
- `marginal_cost_ratio` = rollout_s_per_problem / probe_s_per_problem;
- `startup_s_rollouts` (vLLM engine + verifier pool), `startup_s_probe` (tokenizer + model);
- `break_even_problems`: the pool size above which "roll out the training set, fit, probe the
  rest" costs less than rolling out everything: training problems + (probe start-up + fit) /
  (rollout_s_per_problem - probe_s_per_problem).
Fitting the probe needs rollout labels for its training set, so the saving is on problems labelled
*after* a probe exists.

Sizing on a 2-core CPU: completions average ~44 tokens at max_tokens=64, and vLLM manages
~80-250 tok/s depending on what else runs, so 16 rollouts x 200 problems (~140k tokens) take
10-30 min. Rollouts are cached under $GRADUS_HOME (RolloutStore), with their generation time, so a
rerun measures the same cost without regenerating. `--per-level` sets the pool size (4 generators
x 3 levels x per-level). Usage:

    GRADUS_HOME=.gradus .venv/bin/python bench/probe_vs_rollouts.py [--rollouts 16] [--per-level 17]

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import expit
from scipy.stats import spearmanr

from pipeline.core.model import ModelSpec, embedded_model
from pipeline.core.records import Problem, canonical_json, content_hash
from pipeline.core.storage import gradus_home, within, write_text_atomic
from pipeline.engines import SamplingConfig, create_engine
from pipeline.ingest.sources import ReasoningGymSource, load_problems
from pipeline.probes.hidden_states import HiddenStateExtractor, default_layers
from pipeline.probes.persistence import save_probe
from pipeline.probes.probe import (
    ProbeConfig,
    ProbeReport,
    cv_splits,
    fit_probe,
    predict,
    probe_figures,
    probe_passes,
    probe_target,
)
from pipeline.rollouts.store import RolloutStore, missing_requests
from pipeline.verify.extraction import extract_answer
from pipeline.verify.verification import VerificationTask, VerifierPool

# Easy levels of these give SmolLM2-135M pass rates well above 0; their hard levels, and
# leg_counting throughout, give ~0: the set spans solvable and never-solved problems.
GENERATORS = ("basic_arithmetic", "chain_sum", "products", "leg_counting")
LEVELS = (0, 1, 2)
STEADY_ROLLOUTS = 16
"""Rollouts per problem the steady-state cost is stated for."""
WARM_UP_SAMPLES = 8
PROBE_BATCH_SIZES = (8, 16, 32, 64)


def build_problems(per_level: int) -> pd.DataFrame:
    sources = [ReasoningGymSource(name, levels=LEVELS, size_per_level=per_level) for name in GENERATORS]
    problems = load_problems(sources).problems
    frame = Problem.to_frame(problems)
    frame["generator"] = frame["category"].str.split("/").str[0]
    return frame


def json_number(value: object) -> object:
    """Floats rounded for reading; NaN (e.g. AUROC with one class) as null, which JSON allows."""
    if isinstance(value, float):
        return round(value, 4) if np.isfinite(value) else None
    return value


def load_avg() -> float:
    return os.getloadavg()[0]


def label_with_rollouts(
    model: ModelSpec, problems: pd.DataFrame, sampling: SamplingConfig, n: int, out: Path
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Pass rates from `n` rollouts per problem, generating only what the cache lacks.

    The engine generates a few unstored warm-up requests before the clock starts, so `generate_s`
    is steady-state generation. Generation seconds are accumulated in a timing file next to the
    bench outputs, so the cost of cached rollouts is the one measured when they were generated.
    """
    store = RolloutStore(gradus_home(), model, sampling, engine="vllm")
    ids = problems["problem_id"].tolist()
    todo = missing_requests(problems, n, store.coverage(ids, n))
    timing_path = out / f"rollout-timing-{sampling.key}-n{n}-{content_hash(*sorted(ids), length=10)}.json"
    timing = json.loads(timing_path.read_text()) if timing_path.is_file() else {
        "engine_start_s": 0.0, "generate_s": 0.0, "generated": 0, "tokens": 0, "load_avg": []
    }
    if todo:
        print(f"generating {len(todo)} rollouts ({len(ids)} problems x {n}, {len(todo)} missing)", flush=True)
        started = time.perf_counter()
        engine = create_engine("vllm", model)
        timing["engine_start_s"] = time.perf_counter() - started
        try:
            warm_up = missing_requests(problems.head(2), WARM_UP_SAMPLES)
            engine.generate(warm_up, replace(sampling, seed=sampling.seed + 1))
            started = time.perf_counter()

            def progress(done: int, total: int, tok_s: float) -> None:
                print(f"  rollouts {done}/{total}, {tok_s:.0f} tok/s", flush=True)

            completions = engine.generate(todo, sampling, progress=progress, on_batch=store.append)
            timing["generate_s"] += time.perf_counter() - started
        finally:
            engine.close()
        timing["generated"] += len(todo)
        timing["tokens"] += sum(c.num_tokens for c in completions)
        timing["load_avg"].append(load_avg())
        write_text_atomic(json.dumps(timing, indent=2), timing_path)

    if timing["generated"] < n * len(ids):
        print(f"warning: generation time covers {timing['generated']} of {n * len(ids)} rollouts "
              "(the rest were cached by another run): cost_ratio understates rollout cost", flush=True)
    rollouts = store.load(ids, max_samples=n)
    by_id = problems.set_index("problem_id")
    rows = by_id.loc[rollouts["problem_id"]]
    tasks = [
        VerificationTask(verifier, gold, extract_answer(text, "last_number", verifier=verifier), metadata)
        for verifier, gold, text, metadata in zip(
            rows["verifier"], rows["answer"], rollouts["text"], rows["metadata"]
        )
    ]
    started = time.perf_counter()
    with VerifierPool(workers=2, timeout_s=5.0) as pool:
        pool.verify_many(tasks[:WARM_UP_SAMPLES])  # workers import their verifiers on first use
        pool_start_s = time.perf_counter() - started
        started = time.perf_counter()
        verdicts = pool.verify_many(tasks)
        verify_s = time.perf_counter() - started
    rollouts["passed"] = [v.passed for v in verdicts]
    counts = rollouts.groupby("problem_id")["passed"].agg(["sum", "count"])
    labels = pd.DataFrame(
        {"problem_id": counts.index, "successes": counts["sum"].to_numpy(), "trials": counts["count"].to_numpy()}
    )
    labels["pass_rate"] = labels["successes"] / labels["trials"]
    timed = max(timing["generated"], 1)
    cost = {
        "engine_start_s": timing["engine_start_s"],
        "verifier_start_s": pool_start_s,
        "generate_s": timing["generate_s"],
        "verify_s": verify_s,
        "tokens": float(timing["tokens"]),
        "generated_this_run": float(len(todo)),
        "timed_rollouts": float(timing["generated"]),
        "wall_s": timing["engine_start_s"] + timing["generate_s"] + pool_start_s + verify_s,
        # Steady state: seconds per rollout, generation over the rollouts it timed, verification
        # over all of them.
        "s_per_rollout": timing["generate_s"] / timed + verify_s / max(len(tasks), 1),
        "load_avg": float(np.mean(timing["load_avg"])) if timing["load_avg"] else float("nan"),
    }
    return labels, cost


def probe_features(model: ModelSpec, problems: pd.DataFrame) -> tuple[HiddenStateExtractor, np.ndarray, tuple[int, ...], dict[str, float]]:
    """Hidden states at every swept layer for every problem (to fit the probe on), with the model's
    start-up timed apart from the warm extraction."""
    prompts = [list(p) for p in problems["prompt"]]
    started = time.perf_counter()
    extractor = HiddenStateExtractor(model)
    startup_s = time.perf_counter() - started
    layers = default_layers(extractor.num_hidden_layers)
    extractor.extract(prompts[:WARM_UP_SAMPLES], layers)
    started = time.perf_counter()
    features = extractor.extract(prompts, layers)
    features_s = time.perf_counter() - started
    return extractor, features, layers, {"startup_s": startup_s, "features_s": features_s, "load_avg": load_avg()}


def probe_steady_state(extractor: HiddenStateExtractor, report: ProbeReport, problems: pd.DataFrame) -> pd.DataFrame:
    """Seconds per problem to label with the fitted probe: its chosen layer only, then predict, per
    batch size, after a warm-up at each."""
    import torch

    prompts = [list(p) for p in problems["prompt"]]
    rows = []
    for batch_size in PROBE_BATCH_SIZES:
        extractor.extract(prompts[:batch_size], (report.chosen_layer,), batch_size)
        started = time.perf_counter()
        features = extractor.extract(prompts, (report.chosen_layer,), batch_size)
        extract_s = time.perf_counter() - started
        started = time.perf_counter()
        predict(report, features)
        predict_s = time.perf_counter() - started
        rows.append({"batch_size": batch_size, "threads": torch.get_num_threads(),
                     "extract_s": extract_s, "predict_s": predict_s,
                     "s_per_problem": (extract_s + predict_s) / len(prompts)})
    return pd.DataFrame(rows)


def text_baseline(texts: np.ndarray, successes: np.ndarray, trials: np.ndarray, groups: np.ndarray,
                  pass_rate: np.ndarray, config: ProbeConfig) -> float:
    """Held-out Spearman of character TF-IDF + ridge on the same folds and target as the probe."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline

    target = probe_target(successes, trials, config)
    oof = np.empty(len(texts))
    splits, _ = cv_splits(len(texts), groups, config)
    for train, test in splits:
        model = make_pipeline(
            TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 4), sublinear_tf=True),
            RidgeCV(alphas=config.alphas),
        )
        model.fit(texts[train], target[train])
        oof[test] = model.predict(texts[test])
    return float(spearmanr(expit(oof), pass_rate).statistic)


def print_table(report: ProbeReport, by_generator: ProbeReport, labels: pd.DataFrame, problems: pd.DataFrame,
                rollout_cost: dict[str, float], probe_cost: dict[str, float], baseline: float,
                steady: pd.DataFrame, marginal: dict[str, float]) -> None:
    merged = problems.merge(labels, on="problem_id")
    merged["oof_pred"] = report.oof_pred
    print("\nper category (measured vs out-of-fold predicted pass rate):")
    summary = merged.groupby("category").agg(
        n=("problem_id", "size"), measured=("pass_rate", "mean"),
        ever_solved=("successes", lambda s: float((s > 0).mean())), predicted=("oof_pred", "mean"),
    )
    print(summary.round(3).to_string())
    print("\nper layer (held-out, groups = generator/level):")
    print(report.layer_scores.round(3).to_string(index=False))
    print("\ncalibration (out of fold):")
    print(report.calibration.round(3).to_string(index=False))
    m = report.metrics
    print("\nprobe vs rollouts")
    rows = [
        ("problems / categories / folds", f"{int(m['n_problems'])} / {int(m['n_groups'])} / {int(m['n_folds'])}"),
        ("chosen layer", str(report.chosen_layer)),
        ("held-out Spearman (groups = generator/level)", f"{m['spearman']:.3f}"),
        ("held-out Pearson", f"{m['pearson']:.3f}"),
        ("AUROC ever solved", f"{m['auroc']:.3f}"),
        ("mean within-category Spearman", f"{m['within_group_spearman']:.3f}"),
        ("held-out Spearman (leave one generator out)", f"{by_generator.metrics['spearman']:.3f}"),
        ("text baseline Spearman (char TF-IDF + ridge)", f"{baseline:.3f}"),
        ("blocking check", probe_passes(report)[1]),
        ("rollout labelling wall s (start+gen+pool+verify)",
         f"{rollout_cost['wall_s']:.1f} ({rollout_cost['engine_start_s']:.1f} + "
         f"{rollout_cost['generate_s']:.1f} + {rollout_cost['verifier_start_s']:.1f} + {rollout_cost['verify_s']:.1f})"),
        ("rollout tokens / tok/s", f"{rollout_cost['tokens']:.0f} / {rollout_cost['tokens'] / rollout_cost['generate_s']:.0f}"),
        ("probe labelling wall s (load+prefill all layers, predict)",
         f"{probe_cost['wall_s']:.1f} ({probe_cost['startup_s']:.1f} + {probe_cost['features_s']:.1f}, "
         f"{probe_cost['predict_s']:.3f})"),
        ("probe fit s (6-layer sweep x 5 folds + refit)", f"{probe_cost['fit_s']:.1f}"),
        (f"steady s/problem: {STEADY_ROLLOUTS} rollouts + verify", f"{marginal['rollout_s_per_problem']:.3f}"),
        ("steady s/problem: probe, all swept layers", f"{marginal['probe_s_per_problem_all_layers']:.4f}"),
        ("steady s/problem: probe, chosen layer only", f"{marginal['probe_s_per_problem']:.4f}"),
        ("marginal cost ratio", f"{marginal['marginal_cost_ratio']:.1f}"),
        ("start-up s: rollouts (engine + verifiers) / probe (model)",
         f"{marginal['startup_s_rollouts']:.1f} / {marginal['startup_s_probe']:.1f}"),
        ("break-even pool (problems)", f"{marginal['break_even_problems']}"),
        ("load average (rollouts / probe)", f"{rollout_cost['load_avg']:.1f} / {probe_cost['load_avg']:.1f}"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    print(f"\nprobe labelling at steady state, layer {report.chosen_layer} only, by batch size:")
    print(steady.round(4).to_string(index=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rollouts", type=int, default=STEADY_ROLLOUTS, help="rollouts per problem")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--per-level", type=int, default=17, help="problems per generator and level")
    args = parser.parse_args()

    out = within(gradus_home(), "bench", "probe_vs_rollouts")
    out.mkdir(parents=True, exist_ok=True)
    model = embedded_model()
    problems = build_problems(args.per_level)
    print(f"{len(problems)} problems from {', '.join(GENERATORS)} at levels {LEVELS}", flush=True)
    sampling = SamplingConfig(temperature=0.8, top_p=1.0, max_tokens=args.max_tokens, seed=0)

    labels, rollout_cost = label_with_rollouts(model, problems, sampling, args.rollouts, out)
    labels = labels.set_index("problem_id").loc[problems["problem_id"]].reset_index()

    extractor, features, layers, probe_cost = probe_features(model, problems)
    config = ProbeConfig()
    pass_rate = labels["pass_rate"].to_numpy(float)
    trials = labels["trials"].to_numpy(float)
    ids = problems["problem_id"].tolist()
    started = time.perf_counter()
    report = fit_probe(features, pass_rate, trials, problems["category"].to_numpy(), layers, config,
                       problem_ids=ids, model_key=model.key)
    probe_cost["fit_s"] = time.perf_counter() - started
    started = time.perf_counter()
    predict(report, features)
    probe_cost["predict_s"] = time.perf_counter() - started
    probe_cost["wall_s"] = probe_cost["startup_s"] + probe_cost["features_s"] + probe_cost["predict_s"]
    steady = probe_steady_state(extractor, report, problems)
    best = steady.loc[steady["s_per_problem"].idxmin()]
    rollout_s = rollout_cost["s_per_rollout"] * STEADY_ROLLOUTS
    probe_s = float(best["s_per_problem"])
    startup_probe = probe_cost["startup_s"]
    marginal = {
        "rollout_s_per_problem": rollout_s,
        "probe_s_per_problem": probe_s,
        "probe_batch_size": int(best["batch_size"]),
        "probe_s_per_problem_all_layers": (probe_cost["features_s"] + probe_cost["predict_s"]) / len(problems),
        "marginal_cost_ratio": rollout_s / probe_s,
        "startup_s_rollouts": rollout_cost["engine_start_s"] + rollout_cost["verifier_start_s"],
        "startup_s_probe": startup_probe,
        "break_even_problems": int(np.ceil(len(problems) + (startup_probe + probe_cost["fit_s"]) / (rollout_s - probe_s))),
    }
    by_generator = fit_probe(features, pass_rate, trials, problems["generator"].to_numpy(), layers, config,
                             problem_ids=ids, model_key=model.key)
    texts = np.array([p[-1]["content"] for p in problems["prompt"]])
    baseline = text_baseline(texts, labels["successes"].to_numpy(float), trials,
                             problems["category"].to_numpy(), pass_rate, config)

    save_probe(report, out / "probe")
    for name, png in probe_figures(report).items():
        (out / name).write_bytes(png)
    print_table(report, by_generator, labels, problems, rollout_cost, probe_cost, baseline, steady, marginal)
    print(f"\nprobe, figures and timings in {out}")

    result = {
        "n_problems": len(problems),
        "rollouts_per_problem": args.rollouts,
        "max_tokens": args.max_tokens,
        "spearman": report.metrics["spearman"],
        "pearson": report.metrics["pearson"],
        "auroc": report.metrics["auroc"],
        "within_group_spearman": report.metrics["within_group_spearman"],
        "spearman_leave_generator_out": by_generator.metrics["spearman"],
        "baseline_spearman": baseline,
        "chosen_layer": report.chosen_layer,
        "probe_passes": probe_passes(report)[0],
        "cost_ratio": rollout_cost["wall_s"] / probe_cost["wall_s"],
        **marginal,
        "rollout_wall_s": rollout_cost["wall_s"],
        "probe_wall_s": probe_cost["wall_s"],
        "rollouts_generated_this_run": int(rollout_cost["generated_this_run"]),
        "mean_pass_rate": float(pass_rate.mean()),
        "ever_solved_fraction": float((labels["successes"] > 0).mean()),
        "load_avg": (rollout_cost["load_avg"] + probe_cost["load_avg"]) / 2,
    }
    print(canonical_json({k: json_number(v) for k, v in result.items()}))


if __name__ == "__main__":
    main()
