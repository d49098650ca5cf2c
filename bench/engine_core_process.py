"""Where Ray's generation lost throughput: vLLM's engine core in the engine's own process (as the
Ray actors ran it, `VLLM_ENABLE_V1_MULTIPROCESSING=0`) against in a process of its own (as the
local backend runs it), on the same requests.

Both engines are started first, then generate the same batch in turns (ABBAAB...), so slow changes
in a shared machine's load fall on both alike.

    .venv/bin/python bench/engine_core_process.py [--problems 24] [--n 4] [--max-tokens 48] [--turns 3]

Prints each turn, then one JSON object on its last line.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from ray_overhead import pool  # noqa: E402  (the bench's own problem pool)

MODES = {"own_process": "1", "in_process": "0"}


def serve(multiprocessing_flag: str, conn, problems: int, n: int, max_tokens: int) -> None:
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = multiprocessing_flag
    from pipeline.core.model import embedded_model
    from pipeline.engines.base import SamplingConfig
    from pipeline.engines.factory import engine_options, start_engine
    from pipeline.rollouts.store import missing_requests

    requests = missing_requests(pool(problems), n)
    sampling = SamplingConfig(max_tokens=max_tokens, seed=7)
    engine = start_engine(engine_options("vllm"), embedded_model())
    conn.send("ready")
    while conn.recv() == "go":
        started = time.perf_counter()
        completions = engine.generate(requests, sampling)
        conn.send((sum(c.num_tokens for c in completions), time.perf_counter() - started))
    engine.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=24)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--turns", type=int, default=3)
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    engines = {}
    for mode, flag in MODES.items():
        ours, theirs = context.Pipe()
        process = context.Process(target=serve, args=(flag, theirs, args.problems, args.n, args.max_tokens))
        process.start()
        engines[mode] = (ours, process)
    for ours, _ in engines.values():
        assert ours.recv() == "ready"
    tok_s: dict[str, list[float]] = {mode: [] for mode in MODES}
    for turn in range(args.turns):
        for mode in (list(MODES) if turn % 2 == 0 else list(MODES)[::-1]):
            ours, _ = engines[mode]
            ours.send("go")
            tokens, seconds = ours.recv()
            tok_s[mode].append(round(tokens / seconds, 1))
            print(f"turn {turn} {mode:<12} {tokens} tokens in {seconds:.1f} s: {tokens / seconds:.1f} tok/s, "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
    for ours, process in engines.values():
        ours.send("stop")
        process.join(120)
    print(json.dumps({"own_process_tok_s": tok_s["own_process"], "in_process_tok_s": tok_s["in_process"],
                      "in_over_own": round(sum(tok_s["in_process"]) / sum(tok_s["own_process"]), 3),
                      "load_avg": round(os.getloadavg()[0], 1)}))


if __name__ == "__main__":
    main()
