"""vLLM vs transformers on the same problems, n and max tokens, measured side by side in one run.

    .venv/bin/python bench/engines.py [--problems 16] [--n 8] [--max-tokens 96]

Prints a table, then one JSON object of the figures on its last line.
"""

from __future__ import annotations

import argparse
import json
import time

from pipeline.engines import GenerationRequest, SamplingConfig, create_engine
from pipeline.model import embedded_model
from pipeline.sources import ReasoningGymSource, normalise, reasoning_gym_rows


def measure(kind: str, model, requests, sampling) -> dict:
    started = time.perf_counter()
    engine = create_engine(kind, model)
    start_s = time.perf_counter() - started
    try:
        t0 = time.perf_counter()
        completions = engine.generate(requests, sampling)
        gen_s = time.perf_counter() - t0
    finally:
        engine.close()
    tokens = sum(c.num_tokens for c in completions)
    return {"start_s": start_s, "generate_s": gen_s, "tokens": tokens, "tok_s": tokens / gen_s,
            "rollouts": len(completions)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=16)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=96)
    args = parser.parse_args()

    model = embedded_model()
    per_level = max(args.problems // 4, 1)
    rows = [r for g in ("basic_arithmetic", "chain_sum")
            for r in reasoning_gym_rows(ReasoningGymSource(g, levels=(0, 1), size_per_level=per_level))]
    problems = normalise(rows).problems[: args.problems]
    requests = [GenerationRequest.of(p.problem_id, i, p.prompt) for p in problems for i in range(args.n)]
    sampling = SamplingConfig(max_tokens=args.max_tokens)

    results = {kind: measure(kind, model, requests, sampling) for kind in ("vllm", "transformers")}
    print(f"{len(problems)} problems x n={args.n}, max_tokens={args.max_tokens}")
    print(f"{'engine':<14}{'start s':>9}{'gen s':>9}{'tokens':>9}{'tok/s':>9}")
    for kind, r in results.items():
        print(f"{kind:<14}{r['start_s']:>9.1f}{r['generate_s']:>9.1f}{r['tokens']:>9}{r['tok_s']:>9.1f}")
    figures = {
        "problems": len(problems), "n": args.n, "max_tokens": args.max_tokens,
        "vllm_tok_s": round(results["vllm"]["tok_s"], 1),
        "transformers_tok_s": round(results["transformers"]["tok_s"], 1),
        "vllm_over_transformers": round(results["vllm"]["tok_s"] / results["transformers"]["tok_s"], 2),
        "vllm_start_s": round(results["vllm"]["start_s"], 1),
        "transformers_start_s": round(results["transformers"]["start_s"], 1),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
