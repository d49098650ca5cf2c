"""vLLM vs transformers at steady state: the same requests, n and max tokens, side by side in one run.

On a few dozen sequences start-up jitter and a half-empty last batch decide the ratio; this bench
hands each engine a few hundred sequences (both run full batches: vLLM's running set, transformers'
`batch_size`), generates a small warm-up batch first, and reports start-up apart from generation.

    .venv/bin/python bench/engines.py [--problems 32] [--n 8] [--max-tokens 64]

Prints a table, then one JSON object of the figures on its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace

from pipeline.engines import GenerationRequest, SamplingConfig, create_engine
from pipeline.model import embedded_model
from pipeline.sources import ReasoningGymSource, normalise, reasoning_gym_rows

WARM_UP = 8
"""Requests generated before the clock starts (a different seed, so none is served from a cache)."""


def measure(kind: str, model, requests, sampling) -> dict:
    started = time.perf_counter()
    engine = create_engine(kind, model)
    start_s = time.perf_counter() - started
    try:
        engine.generate(requests[:WARM_UP], replace(sampling, seed=sampling.seed + 1))
        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()

        def progress(done: int, total: int, tok_s: float) -> None:
            print(f"  {kind}: {done}/{total} sequences, {tok_s:.0f} tok/s", flush=True)

        completions = engine.generate(requests, sampling, progress)
        gen_s = time.perf_counter() - t0
    finally:
        engine.close()
    tokens = sum(c.num_tokens for c in completions)
    return {"start_s": start_s, "generate_s": gen_s, "tokens": tokens, "tok_s": tokens / gen_s,
            "sequences": len(completions), "load_avg": (load_before + os.getloadavg()[0]) / 2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=32)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()

    model = embedded_model()
    per_level = max(-(-args.problems // 4), 1)
    rows = [r for g in ("basic_arithmetic", "chain_sum")
            for r in reasoning_gym_rows(ReasoningGymSource(g, levels=(0, 1), size_per_level=per_level))]
    problems = normalise(rows).problems[: args.problems]
    requests = [GenerationRequest.of(p.problem_id, i, p.prompt) for p in problems for i in range(args.n)]
    sampling = SamplingConfig(max_tokens=args.max_tokens)
    print(f"{len(problems)} problems x n={args.n} = {len(requests)} sequences, max_tokens={args.max_tokens}",
          flush=True)

    results = {kind: measure(kind, model, requests, sampling) for kind in ("vllm", "transformers")}
    print(f"{'engine':<14}{'start s':>9}{'gen s':>9}{'tokens':>9}{'tok/s':>9}{'load':>7}")
    for kind, r in results.items():
        print(f"{kind:<14}{r['start_s']:>9.1f}{r['generate_s']:>9.1f}{r['tokens']:>9}{r['tok_s']:>9.1f}"
              f"{r['load_avg']:>7.1f}")
    vllm, hf = results["vllm"], results["transformers"]
    figures = {
        "problems": len(problems), "n": args.n, "max_tokens": args.max_tokens,
        "sequences": len(requests),
        "vllm_tok_s": round(vllm["tok_s"], 1),
        "transformers_tok_s": round(hf["tok_s"], 1),
        "vllm_over_transformers": round(vllm["tok_s"] / hf["tok_s"], 2),
        "startup_s_vllm": round(vllm["start_s"], 1),
        "startup_s_transformers": round(hf["start_s"], 1),
        "load_avg_vllm": round(vllm["load_avg"], 1),
        "load_avg_transformers": round(hf["load_avg"], 1),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
