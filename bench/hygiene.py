"""Pool hygiene at scale: deduplicate a synthetic pool and check it against an evaluation set.

The pool (`--rows`, default 1M) and the evaluation set (`--eval-rows`, default 10k) are problems of
15-80 words: one of a few dozen shared openings ("What is the sum of"), then words drawn one by one
with the frequencies of real English text, rare words and names from a 150k-word list, numbers and
LaTeX expressions, built in Arrow without Python loops. Unrelated problems are therefore different
texts, as in real datasets: they share an 8-gram only by coincidence. Planted into the pool: format
variants of evaluation problems (case, spacing, `\\dfrac`, LaTeX thin spaces), changed-number
variants of others, and format copies of pool problems (for dedup); the rest are unrelated problems
drawn with another seed. Measured: wall time and peak RSS of `deduplicate` followed by `check` on
the kept problems (as the assets run them), recall on the planted variants, and the false-positive
rate on the unrelated problems (flagged pairs among them are printed, to be judged).

Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import re
import resource
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import reasoning_gym

from pipeline.hygiene.contamination import METHODS, Benchmark, ContaminationSpec, check, flagged
from pipeline.hygiene.dedup import THREADS, deduplicate
from pipeline.hygiene.text_forms import problem_texts

DATA = Path(reasoning_gym.__file__).parent / "data"
STEMS = [
    "What is the sum of", "How many", "Find the value of", "Compute", "Let", "Suppose that", "Determine",
    "Calculate", "If", "Given that", "Show that", "What is the", "How much", "Find all", "Evaluate",
    "Simplify", "Solve for", "In how many ways", "What is the probability that", "Express",
    "A", "The", "There are", "Each", "Consider", "Assume", "Prove that", "Estimate", "Which of",
    "What fraction of", "How long", "Find the smallest", "Find the largest", "What is the remainder when",
]
"""Shared question openings, as real datasets repeat them (shorter than an 8-gram, as real stems are)."""


class Vocabulary:
    """Words with the frequencies of real English (a public-domain story shipped with reasoning-gym)
    for the common words, and a 150k-word list for rare ones (names, objects, terms)."""

    def __init__(self) -> None:
        story = re.findall(r"[a-z]+", (DATA / "in_the_year_2889.txt").read_text().lower())
        common, counts = np.unique(np.array(story), return_counts=True)
        self.common = pa.array(common.tolist())
        self.weights = counts / counts.sum()
        self.rare = pa.array((DATA / "words3to10.txt").read_text().split())
        self.stems = pa.array(STEMS)


def _strings(values: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(values), pa.string())


def _tokens(vocab: Vocabulary, rng: np.random.Generator, total: int) -> pa.Array:
    """`total` tokens: common words (by real frequency), rare words, capitalised names, numbers and
    LaTeX expressions, some followed by a comma or full stop."""
    kind = rng.choice(5, total, p=[0.74, 0.12, 0.04, 0.08, 0.02])
    index = np.zeros(total, np.int64)
    common, rare = kind == 0, (kind == 1) | (kind == 2)
    index[common] = rng.choice(len(vocab.common), int(common.sum()), p=vocab.weights)
    index[rare] = rng.integers(0, len(vocab.rare), int(rare.sum()))
    words = pc.if_else(pa.array(common), vocab.common.take(pa.array(np.where(common, index, 0))),
                       vocab.rare.take(pa.array(np.where(common, 0, index))))
    words = pc.if_else(pa.array(kind == 2), pc.utf8_capitalize(words), words)
    numbers = rng.integers(1, 1000, total)
    words = pc.if_else(pa.array(kind == 3), _strings(numbers), words)
    a, b = _strings(rng.integers(1, 50, total)), _strings(rng.integers(2, 50, total))
    latex = pc.choose(pa.array(rng.integers(0, 3, total)),
                      pc.binary_join_element_wise("$\\frac{", a, "}{", b, "}$", ""),
                      pc.binary_join_element_wise("$x^{", a, "} + ", b, "$", ""),
                      pc.binary_join_element_wise("$\\sqrt{", a, "}$", ""))
    words = pc.if_else(pa.array(kind == 4), latex, words)
    punctuation = pa.array(["", ",", "."]).take(pa.array(rng.choice(3, total, p=[0.86, 0.07, 0.07])))
    return pc.binary_join_element_wise(words, punctuation, "")


def problems(n: int, seed: int, vocab: Vocabulary, chunk: int = 100_000) -> pa.Array:
    """`n` word problems of 15-80 words: a common opening, then words drawn independently, so two
    problems share an 8-gram only by real coincidence."""
    rng = np.random.default_rng(seed)
    out = []
    for lo in range(0, n, chunk):
        m = min(chunk, n - lo)
        lengths = rng.integers(15, 81, m)
        body = _tokens(vocab, rng, int(lengths.sum()))
        offsets = np.r_[0, np.cumsum(lengths)].astype(np.int32)
        text = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), body), " ")
        stem = vocab.stems.take(pa.array(rng.integers(0, len(vocab.stems), m)))
        out.append(pc.binary_join_element_wise(stem, pc.binary_join_element_wise(text, "?", ""), " "))
    return pa.concat_arrays(out) if out else pa.array([], pa.string())


def as_pool(texts: pa.Array, answers: pa.Array, ids: pa.Array) -> pa.Table:
    n = len(texts)
    role = pa.array(np.full(n, "user", dtype=object), pa.string())
    messages = pa.StructArray.from_arrays([role, texts], names=["role", "content"])
    prompt = pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32)), messages)
    source = pa.array(np.full(n, "synthetic", dtype=object), pa.string())
    return pa.table({"problem_id": ids, "source": source, "prompt": prompt, "answer": answers, "category": source})


def format_variant(texts: pa.Array) -> pa.Array:
    """The same problem as another dataset might write it: upper case, doubled spaces, `\\dfrac` and
    LaTeX thin spaces."""
    t = pc.replace_substring(texts, "\\frac{", "\\dfrac {")
    t = pc.replace_substring(t, "}{", "}\\,{")
    return pc.replace_substring(pc.utf8_upper(t), " ", "  ")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(rows: int, eval_rows: int, planted: float, folder: Path) -> None:
    """Write the pool, the evaluation set and each pool row's kind (0 format variant of an evaluation
    problem, 1 changed numbers, 2 unrelated, 3 format copy of a pool problem) under `folder`."""
    rng = np.random.default_rng(7)
    n, m = rows, min(eval_rows, rows)
    k = max(int(n * planted), 1)
    vocab = Vocabulary()
    bench_texts = problems(m, seed=1, vocab=vocab)
    exact = format_variant(bench_texts.take(pa.array(rng.integers(0, m, k))))
    numbers = pc.replace_substring_regex(bench_texts.take(pa.array(rng.integers(0, m, k))), pattern=r"(\d+)",
                                         replacement=r"9\1")
    unrelated = problems(n - 3 * k, seed=2, vocab=vocab)
    copied = rng.integers(0, len(unrelated), k)
    copies = format_variant(unrelated.take(pa.array(copied)))
    texts = pa.concat_arrays([exact, numbers, unrelated, copies])
    answer = rng.integers(0, 10**6, len(texts))
    answer[-k:] = answer[2 * k: 2 * k + len(unrelated)][copied]  # a copy keeps its original's answer
    ids = pc.cast(pa.array(np.arange(len(texts))), pa.string())
    pq.write_table(as_pool(texts, pc.cast(pa.array(answer), pa.string()), ids), folder / "pool.parquet")
    bench_ids = pc.cast(pa.array(np.arange(m)), pa.string())
    pq.write_table(as_pool(bench_texts, bench_ids, bench_ids), folder / "bench.parquet")
    np.save(folder / "kind.npy", np.repeat(np.array([0, 1, 2, 3]), [k, k, len(unrelated), k]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="pool size")
    parser.add_argument("--eval-rows", type=int, default=10_000, help="evaluation set size")
    parser.add_argument("--planted", type=float, default=0.01, help="share of the pool per planted kind")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        # Built in a child process, so the measured peak RSS is the check's (read from Parquet, as
        # the assets read the pool), not the generator's.
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as child:
            child.submit(build, args.rows, args.eval_rows, args.planted, Path(tmp)).result()
        pool, bench = pq.read_table(Path(tmp) / "pool.parquet"), pq.read_table(Path(tmp) / "bench.parquet")
        kind = np.load(Path(tmp) / "kind.npy")
    texts, m = pool.column("prompt"), bench.num_rows
    bench_texts = problem_texts(bench)
    setup_rss = peak_rss_mb()
    print(f"built {len(texts)} pool problems and {m} evaluation problems; rss {setup_rss:.0f} MB", flush=True)

    start = time.perf_counter()
    result = deduplicate(pool, progress=lambda msg: print(msg, flush=True))
    dedup_s = time.perf_counter() - start
    kept = pool.filter(pa.array(result.keep))
    del pool, texts  # as the assets hold it: the kept problems only
    spec = ContaminationSpec()
    benchmark = Benchmark.build("eval", bench, spec)
    report = check(kept, [benchmark], spec, progress=lambda msg: print(msg, flush=True))
    wall = time.perf_counter() - start

    kept_kind = kind[result.keep]
    hit = flagged(report).to_numpy()
    counts = result.counts()
    # Unrelated problems that are flagged: show the pairs, so a false positive can be judged (shared
    # n-gram by coincidence, or a method fault).
    unrelated_hits = np.flatnonzero(hit & (kept_kind == 2))
    kept_texts = problem_texts(kept)
    for row in unrelated_hits[:5]:
        match = report["eval/match"].iloc[row]
        methods = [c for c in report.columns if c.split("/")[-1] in METHODS and report[c].iloc[row]]
        print(f"false positive by {methods}:\n  pool:  {kept_texts[int(row)]}\n  eval:  {bench_texts[int(match)]}")
    figures = {
        "rows": len(kind),
        "eval_rows": m,
        "wall_s": round(wall, 1),
        "dedup_s": round(dedup_s, 1),
        "contamination_s": round(wall - dedup_s, 1),
        "peak_rss_mb": round(peak_rss_mb(), 0),
        "setup_rss_mb": round(setup_rss, 0),
        "recall_exact": round(float(hit[kept_kind == 0].mean()), 4),
        "recall_changed_numbers": round(float(hit[kept_kind == 1].mean()), 4),
        "false_positive_rate": round(float(hit[kept_kind == 2].mean()), 6),
        "per_method_recall_changed_numbers": {c: round(float(report[c].to_numpy()[kept_kind == 1].mean()), 4)
                                              for c in report.columns if c.split("/")[-1] in
                                              ("exact", "open_r1", "datatrove")},
        "dedup_kept": counts.get("kept", 0),
        "dedup_exact": counts.get("exact_duplicate", 0),
        "dedup_near": counts.get("near_duplicate", 0),
        "planted_pool_copies": int((kind == 3).sum()),
        "threads": THREADS,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
