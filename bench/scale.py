"""Curriculum build at scale: stratify + Parquet stages + manifest for 10k, 100k and 1M problems.

    .venv/bin/python bench/scale.py [--sizes 10000 100000 1000000]

Problems and labels are synthesised directly as Arrow tables (prompts of 100-300 characters, a
realistic mix of sources, categories and verifiers; labels in another order than the problems, as
a join meets them). Each size runs in a fresh child process (`--rows N`), so its peak RSS
(`ru_maxrss`) is its own: it includes the interpreter, the libraries and the synthesised tables,
which a real run holds as well; `data_rss_mb` is the resident size just before the build.
`wall_s` times `build_curriculum` alone. Goal: 1M rows in <= 30 s and <= 2 GB on 2 cores.

Prints a table, then one JSON object of the figures on its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.core.records import MESSAGE
from pipeline.curriculum.build import CurriculumSpec, build_curriculum

SIZES = (10_000, 100_000, 1_000_000)
GOAL_WALL_S = 30.0
GOAL_RSS_MB = 2048.0
N_TRIALS = 8


def _words(rng: np.random.Generator, n_words: int) -> pa.Array:
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype="S1")
    lengths = rng.integers(2, 10, n_words)
    chars = letters[rng.integers(0, 26, int(lengths.sum()))]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.StringArray.from_buffers(n_words, pa.py_buffer(offsets), pa.py_buffer(chars.tobytes()))


def _hex_ids(rng: np.random.Generator, n: int) -> pa.Array:
    raw = np.frombuffer(rng.bytes(10 * n).hex().encode(), dtype="S20")
    return pa.array(raw, pa.binary(20)).cast(pa.string())


def synthesise(n: int, seed: int = 0) -> tuple[pa.Table, pa.Table]:
    """`n` problems in the `Problem` schema and their labels, without a Python loop per row."""
    rng = np.random.default_rng(seed)
    vocab = _words(rng, 5_000)
    n_words = rng.integers(16, 46, n)  # ~6.5 characters per word with its space: 100-300 characters
    offsets = pa.array(np.concatenate([[0], np.cumsum(n_words)]).astype(np.int32))
    words = vocab.take(pa.array(rng.integers(0, len(vocab), int(n_words.sum()))))
    content = pc.binary_join(pa.ListArray.from_arrays(offsets, words), " ")
    content = pc.binary_join_element_wise(content, pa.array(rng.integers(0, 1000, n)).cast(pa.string()), " = ?")
    message = pa.StructArray.from_arrays([pa.array(np.full(n, "user")), content], fields=list(MESSAGE))
    prompt = pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32)), message)

    ids = _hex_ids(rng, n)
    kinds = np.array(["reasoning_gym/chain_sum", "reasoning_gym/basic_arithmetic", "dataset/math.jsonl"])
    kind = rng.integers(0, len(kinds), n)
    level = rng.integers(0, 10, n)
    categories = pa.array([f"{k}/level_{lv}" for k in kinds for lv in range(10)])
    problems = pa.table({
        "problem_id": ids,
        "source": pa.array(kinds[kind]),
        "prompt": prompt,
        "answer": pa.array(rng.integers(-10_000, 10_000, n)).cast(pa.string()),
        "verifier": pa.array(np.where(kind == 2, "math", "reasoning_gym")),
        "category": categories.take(pa.array(kind * 10 + level)),
        "metadata": pc.binary_join_element_wise('{"level":', pa.array(level).cast(pa.string()), "}", ""),
    })

    # Pass rates from a U-shaped Beta, as small models produce (many 0s and 1s).
    successes = rng.binomial(N_TRIALS, rng.beta(0.6, 0.6, n))
    order = rng.permutation(n)
    labels = pa.table({
        "problem_id": ids.take(pa.array(order)),
        "successes": pa.array(successes[order], pa.int64()),
        "trials": pa.array(np.full(n, N_TRIALS), pa.int64()),
        "pass_rate": pa.array(successes[order] / N_TRIALS),
        "ci_low": pa.array(np.clip(successes[order] / N_TRIALS - 0.2, 0, 1)),
        "ci_high": pa.array(np.clip(successes[order] / N_TRIALS + 0.2, 0, 1)),
    })
    return problems, labels


def _rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(n: int) -> dict:
    """One size, in this process: synthesise, build, report (run it in a fresh process)."""
    t0 = time.perf_counter()
    problems, labels = synthesise(n)
    synth_s = time.perf_counter() - t0
    data_rss = _rss_mb()
    with tempfile.TemporaryDirectory(prefix="gradus-scale-") as home:
        t0 = time.perf_counter()
        manifest = build_curriculum(problems, labels, CurriculumSpec(f"scale_{n}"), Path(home))
        wall_s = time.perf_counter() - t0
        size_mb = sum(f.stat().st_size for f in Path(home).rglob("*.parquet")) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {
        "rows": n,
        "wall_s": round(wall_s, 2),
        "peak_rss_mb": round(peak, 1),
        "data_rss_mb": round(data_rss, 1),
        "synth_s": round(synth_s, 2),
        "in_stages": manifest["counts"]["in_stages"],
        "parquet_mb": round(size_mb, 1),
        "prompt_chars_mean": round(float(pc.mean(pc.utf8_length(
            pc.struct_field(pc.list_flatten(problems.column("prompt")), "content"))).as_py()), 1),
    }


def run_child(n: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--rows", str(n)], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"size {n} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--rows", type=int, help="measure one size in this process (used by the parent)")
    args = parser.parse_args()
    if args.rows:
        print(json.dumps(measure(args.rows)))
        return

    results = [run_child(n) for n in args.sizes]
    print(f"{'rows':>10}{'build s':>9}{'peak MB':>9}{'data MB':>9}{'synth s':>9}{'stage rows':>12}{'parquet MB':>12}")
    for r in results:
        print(f"{r['rows']:>10}{r['wall_s']:>9.2f}{r['peak_rss_mb']:>9.0f}{r['data_rss_mb']:>9.0f}"
              f"{r['synth_s']:>9.2f}{r['in_stages']:>12}{r['parquet_mb']:>12.1f}")
    def build_rss(r: dict) -> float:
        return max(r["peak_rss_mb"] - r["data_rss_mb"], 1.0)

    growth = [
        {"from": a["rows"], "to": b["rows"], "rows_x": round(b["rows"] / a["rows"], 1),
         "wall_x": round(b["wall_s"] / a["wall_s"], 1),
         "peak_rss_x": round(b["peak_rss_mb"] / a["peak_rss_mb"], 2),
         "rss_above_data_x": round(build_rss(b) / build_rss(a), 1)}
        for a, b in zip(results, results[1:])
    ]
    for g in growth:
        print(f"{g['from']} -> {g['to']} rows (x{g['rows_x']}): build time x{g['wall_x']}, "
              f"peak RSS x{g['peak_rss_x']} (RSS added by the build x{g['rss_above_data_x']})")
    largest = results[-1]
    figures = {
        **{k: largest[k] for k in ("rows", "wall_s", "peak_rss_mb", "data_rss_mb", "synth_s", "parquet_mb")},
        "meets_goal": largest["wall_s"] <= GOAL_WALL_S and largest["peak_rss_mb"] <= GOAL_RSS_MB,
        "goal": {"wall_s": GOAL_WALL_S, "peak_rss_mb": GOAL_RSS_MB},
        "cpus": os.cpu_count(),
        "sizes": {str(r["rows"]): {k: r[k] for k in ("wall_s", "peak_rss_mb", "data_rss_mb")} for r in results},
        "growth": growth,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
