"""vLLM vs transformers at steady state: the same requests, n and max tokens, side by side in one run.

On a few dozen sequences start-up jitter and a half-empty last batch decide the ratio; this bench
hands each engine a few hundred sequences and reports start-up apart from generation. Each engine
gets the setting a user who tuned it would run:

- vLLM: eager (compiling costs ~90 s of start-up on a CPU for ~10 %), no CPU reserved for its own
  scheduler (`VLLM_CPU_NUM_OF_RESERVED_CPU=0`), every request in one call so its scheduler keeps
  its running set full.
- transformers: torch threads = the cores this process may use, requests sorted by prompt length
  (least padding), and the batch size picked by a short calibration over `--hf-batch-sizes`
  (the one with the highest generated tok/s wins; larger batches use the cores better but keep
  finished sequences' slots busy).

Both generate a small warm-up batch (other seeds, so nothing is reused) before the clock starts.

    PYTHONPATH=. .venv/bin/python bench/engines.py [--problems 32] [--n 8] [--max-tokens 64]

With the defaults (256 sequences) it should take about 5 minutes on a quiet 2-core machine (from
the rates in the stack notes: vLLM ~270 tok/s, transformers ~70 tok/s); on a loaded one
transformers' threads contend and it takes far longer. Prints progress, a table, then one JSON
object of the figures on its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace

from pipeline.core.model import embedded_model, load_tokenizer
from pipeline.core.progress import Progress
from pipeline.engines import GenerationRequest, SamplingConfig, create_engine
from pipeline.engines.base import Engine
from pipeline.ingest.sources import ReasoningGymSource, normalise, reasoning_gym_rows

WARM_UP = 8
"""Requests generated before the clock starts (a different seed, so none is served from a cache)."""
CALIBRATION_TOKENS = 16
"""max_tokens of each transformers calibration batch: long enough to reach steady decoding."""


def say(line: str) -> None:
    print(line, flush=True)


def cores() -> int:
    """CPUs this process may run on (the affinity mask, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def timed_generate(engine: Engine, requests, sampling, label: str) -> tuple[float, int]:
    progress = Progress(label, len(requests), say, unit="sequences", every_s=15)
    started = time.perf_counter()
    completions = engine.generate(
        requests, sampling, lambda done, _, tok_s: progress.update(done, f"{tok_s:.0f} tok/s")
    )
    return time.perf_counter() - started, sum(c.num_tokens for c in completions)


def engine_options(kind: str, requests, batch_size: int = 0) -> dict:
    return {"batch_size": len(requests)} if kind == "vllm" else {"threads": cores(), "batch_size": batch_size}


def calibrate_batch(model, requests, sampling, sizes: list[int]) -> tuple[int, dict[int, float]]:
    """The transformers batch size with the highest generated tok/s on a short run of each size
    (a fresh engine per size: the batch size is fixed when an engine is made)."""
    short = replace(sampling, seed=sampling.seed + 2, max_tokens=min(CALIBRATION_TOKENS, sampling.max_tokens))
    rates = {}
    for size in sizes:
        with create_engine("transformers", model, **engine_options("transformers", requests, size)) as engine:
            engine.generate(requests[:WARM_UP], replace(short, seed=short.seed + 1))
            started = time.perf_counter()
            tokens = sum(c.num_tokens for c in engine.generate(requests[:size], short))
            rates[size] = tokens / (time.perf_counter() - started)
        say(f"  transformers calibration: batch {size}: {rates[size]:.1f} tok/s")
    return max(rates, key=rates.get), rates


def measure(kind: str, model, requests, sampling, batch_size: int = 0) -> dict:
    options = engine_options(kind, requests, batch_size)
    say(f"{kind}: starting ({', '.join(f'{k}={v}' for k, v in options.items())})")
    started = time.perf_counter()
    engine = create_engine(kind, model, **options)
    start_s = time.perf_counter() - started
    try:
        engine.generate(requests[:WARM_UP], replace(sampling, seed=sampling.seed + 1))
        load_before = os.getloadavg()[0]
        gen_s, tokens = timed_generate(engine, requests, sampling, f"{kind} generation")
    finally:
        engine.close()
    return {"start_s": start_s, "generate_s": gen_s, "tokens": tokens, "tok_s": tokens / gen_s,
            "sequences": len(requests), "load_avg": (load_before + os.getloadavg()[0]) / 2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=32)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--hf-batch-sizes", default="16,32,64,128",
                        help="transformers batch sizes the calibration tries (comma-separated)")
    args = parser.parse_args()
    hf_sizes = sorted({int(s) for s in args.hf_batch_sizes.split(",")})

    # The engine sets this only if unset; a value left in the environment would bias vLLM's side.
    os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] = "0"
    model = embedded_model()
    per_level = max(-(-args.problems // 4), 1)
    rows = [r for g in ("basic_arithmetic", "chain_sum")
            for r in reasoning_gym_rows(ReasoningGymSource(g, levels=(0, 1), size_per_level=per_level))]
    problems = normalise(rows).problems[: args.problems]
    tokenizer = load_tokenizer(model)
    length = {p.problem_id: len(tokenizer.apply_chat_template(list(p.prompt), tokenize=True,
                                                              add_generation_prompt=True))
              for p in problems}
    # Sorted by prompt length, so transformers' batches hold similar lengths (least left padding).
    problems = sorted(problems, key=lambda p: length[p.problem_id])
    requests = [GenerationRequest.of(p.problem_id, i, p.prompt) for p in problems for i in range(args.n)]
    sampling = SamplingConfig(max_tokens=args.max_tokens)
    hf_sizes = [s for s in hf_sizes if s <= len(requests)] or [len(requests)]
    say(f"{len(problems)} problems x n={args.n} = {len(requests)} sequences, max_tokens={args.max_tokens}, "
        f"{cores()} cores, load {os.getloadavg()[0]:.1f}")

    vllm = measure("vllm", model, requests, sampling)
    batch_size, calibration = calibrate_batch(model, requests, sampling, hf_sizes)
    results = {"vllm": vllm, "transformers": measure("transformers", model, requests, sampling, batch_size)}
    say(f"{'engine':<14}{'start s':>9}{'gen s':>9}{'tokens':>9}{'tok/s':>9}{'load':>7}")
    for kind, r in results.items():
        say(f"{kind:<14}{r['start_s']:>9.1f}{r['generate_s']:>9.1f}{r['tokens']:>9}{r['tok_s']:>9.1f}"
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
        "generate_s_vllm": round(vllm["generate_s"], 1),
        "generate_s_transformers": round(hf["generate_s"], 1),
        "transformers_batch_size": batch_size,
        "transformers_calibration_tok_s": {str(k): round(v, 1) for k, v in calibration.items()},
        "threads": cores(),
        "load_avg_vllm": round(vllm["load_avg"], 1),
        "load_avg_transformers": round(hf["load_avg"], 1),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
