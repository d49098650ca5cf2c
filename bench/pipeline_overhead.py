"""What the pipeline costs on top of the engine: bare `vllm.LLM.generate` vs the `rollouts` asset.

The same problems, n and max tokens go through
- bare: one `vllm.LLM` started as a user would on this CPU (float32, eager, whole prefills, the stack-notes
  environment settings) and a single `generate` call with `SamplingParams(n=n)` per prompt;
- asset: `dagster.materialize` of the `rollouts` asset (uniform policy, n per problem) on a fixed
  problems frame, with an empty rollout cache, the vLLM engine resource and the real store;
- bare again, so `asset_over_bare` compares the asset with the mean of a bare run before and after
  it (both rates are reported: their spread is the noise of a shared machine).
`asset_share_outside_engine` is the part of the asset's time spent outside the engine's generate
calls (Dagster, store writes, merging), measured within the one asset run, so it does not depend on
load moving between runs.

Engine start-up and shutdown are excluded from both rates and reported apart: the asset's rate is
its generated tokens over (materialize wall time - the engine resource's start-up and shutdown), so
everything else the pipeline does (Dagster's run, batching, per-request seeds, store writes,
merging) counts as its cost.

To say where a gap comes from, `--attribute` has the bare engine also run the same requests the
way the pipeline's engine issues them (one request per sample with its own seed, in one call, after
a reset of the prefix cache so it does not profit from the first run), then starts gradus's
`VLLMEngine` outside Dagster and times its `generate` (a window of requests inside vLLM, refilled
as each finishes): bare → seeded is the cost of per-request seeds, seeded → engine that of the
engine class, engine → asset that of Dagster and the store.

    GRADUS_HOME=.gradus .venv/bin/python bench/pipeline_overhead.py [--problems 32] [--n 8] [--max-tokens 64]

Prints a table, then one JSON object of the figures on its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable

import pandas as pd

from pipeline.core.model import ModelSpec, embedded_model, load_tokenizer
from pipeline.core.records import Problem
from pipeline.engines.base import GenerationRequest, SamplingConfig
from pipeline.ingest.sources import ReasoningGymSource, load_problems

GENERATORS = ("basic_arithmetic", "chain_sum", "products", "leg_counting")


def build_problems(count: int) -> pd.DataFrame:
    per_level = max(1, -(-count // (len(GENERATORS) * 2)))
    sources = [ReasoningGymSource(name, levels=(0, 1), size_per_level=per_level) for name in GENERATORS]
    return Problem.to_frame(load_problems(sources).problems[:count])


def cpu_environment() -> None:
    """The settings the stack notes measured as mattering on a small CPU (same as the engine's)."""
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")


def timed(name: str, fn: Callable[[], list]) -> tuple[float, int, int]:
    """(seconds, generated tokens, sequences) of one generate call, printed as it finishes."""
    started = time.perf_counter()
    outputs = fn()
    seconds = time.perf_counter() - started
    sequences = [o for out in outputs for o in out.outputs]
    tokens = sum(len(o.token_ids) for o in sequences)
    print(f"{name}: {tokens} tokens in {seconds:.1f} s, {tokens / seconds:.1f} tok/s", flush=True)
    return seconds, tokens, len(sequences)


def pipeline_requests(problems: pd.DataFrame, n: int) -> list[GenerationRequest]:
    return [GenerationRequest.of(pid, i, list(prompt))
            for pid, prompt in zip(problems["problem_id"], problems["prompt"]) for i in range(n)]


def bare(model: ModelSpec, problems: pd.DataFrame, n: int, sampling: SamplingConfig, attribute: bool) -> dict:
    """Bare vLLM; with `attribute`, then the pipeline's request shape in one call on the same engine."""
    from vllm import LLM, SamplingParams

    tokenizer = load_tokenizer(model)
    texts = [tokenizer.apply_chat_template(list(p), tokenize=False, add_generation_prompt=True)
             for p in problems["prompt"]]
    started = time.perf_counter()
    # Whole prefills, as the pipeline's engine runs: vLLM 0.32's CPU runner crashes on seeded
    # requests whose prefill is split ("CPU Generator does not use offset").
    llm = LLM(model=model.path, tokenizer=model.path, dtype="float32", enforce_eager=True, seed=0,
              max_model_len=2048, enable_chunked_prefill=False, max_num_batched_tokens=4096)
    start_s = time.perf_counter() - started
    try:
        plain = SamplingParams(n=n, temperature=sampling.temperature, top_p=sampling.top_p,
                               max_tokens=sampling.max_tokens)
        figures = {"start_s": start_s}
        figures["bare"] = timed("bare", lambda: llm.generate(texts, plain, use_tqdm=False))
        if not attribute:
            return figures

        requests = pipeline_requests(problems, n)
        seeded = [SamplingParams(n=1, temperature=sampling.temperature, top_p=sampling.top_p,
                                 max_tokens=sampling.max_tokens,
                                 seed=sampling.request_seed(r.problem_id, r.sample_index)) for r in requests]
        text_of = dict(zip(problems["problem_id"], texts))
        prompts = [text_of[r.problem_id] for r in requests]
        llm.reset_prefix_cache()
        figures["seeded_one_call"] = timed("seeded, one call", lambda: llm.generate(prompts, seeded, use_tqdm=False))
    finally:
        llm.llm_engine.engine_core.shutdown(timeout=30)
    return figures


def engine_class(model: ModelSpec, problems: pd.DataFrame, n: int, sampling: SamplingConfig) -> tuple[float, int, int]:
    """gradus's `VLLMEngine.generate` on the pipeline's requests, outside Dagster: (s, tokens, sequences)."""
    from pipeline.engines import create_engine

    with create_engine("vllm", model) as engine:
        started = time.perf_counter()
        completions = engine.generate(pipeline_requests(problems, n), sampling)
        seconds = time.perf_counter() - started
    tokens = sum(c.num_tokens for c in completions)
    print(f"gradus engine: {tokens} tokens in {seconds:.1f} s, {tokens / seconds:.1f} tok/s", flush=True)
    return seconds, tokens, len(completions)


def asset(model: ModelSpec, problems: pd.DataFrame, n: int, sampling: SamplingConfig) -> dict:
    """The `rollouts` asset on the fixed problems, in a fresh store, through `dagster.materialize`."""
    import dagster

    from assets import labelling
    from assets.deployment import resources as gradus_resources
    from assets.resources import TargetModel, VLLMEngineResource

    class TimedVLLMEngine(VLLMEngineResource):
        """The engine resource, timing its shutdown (a one-time cost like its start-up)."""

        def _shutdown(self) -> None:
            started = time.perf_counter()
            super()._shutdown()
            shutdown_s.append(time.perf_counter() - started)

    shutdown_s: list[float] = []

    @dagster.asset(name="unique_problems", group_name="labelling")
    def fixed_problems() -> pd.DataFrame:
        return problems

    with tempfile.TemporaryDirectory(prefix="gradus-overhead-") as home:
        resources = gradus_resources(
            {"GRADUS_HOME": home},
            # The converted model, named explicitly so no weights are hashed inside the timed run.
            target_model=TargetModel(model_path=model.path, model_id=model.model_id, revision=model.revision,
                                     temperature=sampling.temperature, top_p=sampling.top_p,
                                     max_tokens=sampling.max_tokens, seed=sampling.seed),
            engine=TimedVLLMEngine(),
        )
        run_config = {"ops": {"rollouts": {"config": {"policy": "uniform", "samples_per_problem": n}}}}
        dagster.materialize([fixed_problems], resources=resources)  # the problems are not what is timed
        started = time.perf_counter()
        result = dagster.materialize([fixed_problems, labelling.rollouts], resources=resources,
                                     run_config=run_config, selection=["rollouts", "rollout_allocation"])
        wall_s = time.perf_counter() - started
    if not result.success:
        raise RuntimeError("materializing rollouts failed")
    print(f"asset: materialize {wall_s:.1f} s", flush=True)
    meta = next(e.materialization.metadata for e in result.get_asset_materialization_events()
                if e.asset_key.to_user_string() == "rollouts")
    tokens = int(meta["generated_tokens"].value)
    start_s = float(meta["engine_start_s"].value)
    engine_tok_s = float(meta["tokens_per_second"].value)
    return {"wall_s": wall_s, "start_s": start_s, "shutdown_s": sum(shutdown_s), "tokens": tokens, "rows": int(meta["rows"].value),
            "engine_generate_s": tokens / engine_tok_s if engine_tok_s else float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=32)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--attribute", action="store_true",
                        help="also time the pipeline's request shape on the bare engine")
    args = parser.parse_args()

    cpu_environment()
    model = embedded_model()
    problems = build_problems(args.problems)
    sampling = SamplingConfig(temperature=0.8, top_p=1.0, max_tokens=args.max_tokens, seed=0)
    from pipeline.engines.vllm_engine import VLLMEngine

    batch = VLLMEngine.CPU_BATCH_SIZE
    print(f"{len(problems)} problems x n={args.n}, max_tokens={args.max_tokens}", flush=True)
    load_before = os.getloadavg()[0]
    b = bare(model, problems, args.n, sampling, args.attribute)
    print("bare engine done", flush=True)
    if args.attribute:
        b["engine_class"] = engine_class(model, problems, args.n, sampling)
    a = asset(model, problems, args.n, sampling)
    # Bare again, after the asset: on a shared machine the load moves between the runs, and the
    # spread of the two bare rates says how far the ratio can be trusted.
    again = bare(model, problems, args.n, sampling, False)
    load_after = os.getloadavg()[0]

    asset_gen_s = a["wall_s"] - a["start_s"] - a["shutdown_s"]
    rows = [("bare generate (n per prompt)", *b["bare"]), ("bare again, after the asset", *again["bare"])]
    if args.attribute:
        rows += [("bare, seeded requests, one call", *b["seeded_one_call"]),
                 (f"gradus VLLMEngine.generate (window {batch})", *b["engine_class"])]
    rows += [("asset: engine generate calls", a["engine_generate_s"], a["tokens"], a["rows"]),
             ("asset: materialize - start-up - shutdown", asset_gen_s, a["tokens"], a["rows"])]
    print(f"\n{'path':44}{'s':>8}{'tokens':>8}{'seqs':>6}{'tok/s':>8}")
    for name, seconds, tokens, seqs in rows:
        print(f"{name:44}{seconds:8.1f}{tokens:8d}{seqs:6d}{tokens / seconds:8.1f}")
    print(f"start-up s: bare {b['start_s']:.1f}, asset engine {a['start_s']:.1f} (shutdown {a['shutdown_s']:.1f}); "
          f"materialize wall {a['wall_s']:.1f}; load average {load_before:.1f} -> {load_after:.1f}")

    rates = [run["bare"][1] / run["bare"][0] for run in (b, again)]
    bare_tok_s = sum(rates) / 2
    asset_tok_s = a["tokens"] / asset_gen_s
    figures = {
        "problems": len(problems), "n": args.n, "max_tokens": args.max_tokens,
        "bare_tok_s": round(bare_tok_s, 1),
        "bare_tok_s_before_after": [round(r, 1) for r in rates],
        "asset_tok_s": round(asset_tok_s, 1),
        "asset_over_bare": round(asset_tok_s / bare_tok_s, 3),
        "asset_engine_tok_s": round(a["tokens"] / a["engine_generate_s"], 1),
        # What the asset spends outside the engine's generate calls (Dagster, store, merging):
        # unlike the bare/asset ratio, measured within one run of one engine, so load swings
        # between the two engines do not enter it.
        "asset_share_outside_engine": round(1 - a["engine_generate_s"] / asset_gen_s, 4),
        "startup_s_bare": round(b["start_s"], 1),
        "startup_s_asset": round(a["start_s"], 1),
        "shutdown_s_asset": round(a["shutdown_s"], 1),
        "batch": batch,
        "load_avg": round((load_before + load_after) / 2, 1),
    }
    if args.attribute:
        for key in ("seeded_one_call", "engine_class"):
            seconds, tokens, _ = b[key]
            figures[f"{key}_tok_s"] = round(tokens / seconds, 1)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
