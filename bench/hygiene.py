"""Pool hygiene at scale: deduplicate a synthetic pool and check it against an evaluation set.

The pool (`--rows`, default 1M) and the evaluation set (`--eval-rows`, default 10k) are word problems
built from sentence templates with many slots (names, objects, places, adjectives, numbers), in Arrow
without Python loops. Planted into the pool: format variants of evaluation problems (case and
spacing), changed-number variants of others, and format copies of pool problems (for dedup); the
rest are unrelated problems drawn with another seed. Measured: wall time and peak RSS of
`deduplicate` followed by `check` on the kept problems (as the assets run them), recall on the
planted variants, and the false-positive rate on the unrelated problems.

Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.contamination import Benchmark, ContaminationSpec, check, flagged
from pipeline.dedup import deduplicate

NAMES = [f"{a}{b}" for a in ("Al", "Be", "Ca", "Da", "El", "Fa", "Gi", "Ha", "Io", "Ja", "Ke", "Lu", "Ma", "No",
                             "Ol", "Pe", "Qu", "Ro", "Sa", "Te") for b in ("ma", "ni", "ro", "sa", "ti", "vo",
                                                                           "la", "ne", "di", "ko")]
OBJECTS = [f"{a} {b}" for a in ("red", "blue", "green", "tiny", "large", "old", "new", "wooden", "glass", "paper",
                                "silver", "golden", "striped", "round", "square")
           for b in ("apples", "marbles", "books", "coins", "pencils", "cards", "stamps", "shells", "beads",
                     "tickets", "boxes", "bottles", "candles", "cookies", "flowers", "stones", "rings", "cups")]
PLACES = [f"{a} {b}" for a in ("north", "south", "east", "west", "old", "new", "central", "upper", "lower", "quiet")
          for b in ("market", "library", "school", "harbour", "garden", "station", "bakery", "museum", "farm",
                    "park", "square", "bridge")]
VERBS = ["buys", "finds", "sells", "gives away", "loses", "collects", "borrows", "paints", "packs", "trades"]
SENTENCES = [
    "{n} has {a} {o} in a bag at the {p}.",
    "On Monday {n} {v} {b} {o} near the {p}.",
    "Later {n} {v} {a} more {o} and pays {b} dollars for them.",
    "Each of the {o} weighs {a} grams, and {n} carries {b} of them to the {p}.",
    "{n} shares {a} {o} equally among {b} friends from the {p}.",
]
QUESTIONS = [
    "How many {o} does {n} have after visiting the {p}?",
    "What is the total weight in grams of the {o} {n} brought to the {p}?",
    "What is the sum of the {o} {n} counted at the {p} and the ones left at home?",
]


# Real problems rarely share 8 words with an unrelated one; places owned by a person keep the
# synthetic ones as varied (fixed words between slots would otherwise collide across problems).
OWNED_PLACES = [f"{p} of {n}" for p in PLACES for n in NAMES[::2]]


def _fill(template: str, rng: np.random.Generator, n: int) -> pa.Array:
    """One sentence per row: the template's slots filled with random choices, joined by Arrow."""
    slots = {"n": NAMES, "o": OBJECTS, "p": OWNED_PLACES, "v": VERBS}
    parts: list[pa.Array | str] = []
    rest = template
    while "{" in rest:
        head, _, tail = rest.partition("{")
        key, _, rest = tail.partition("}")
        parts.append(head)
        if key in slots:
            parts.append(pa.array(slots[key]).take(pa.array(rng.integers(0, len(slots[key]), n))))
        else:
            parts.append(pc.cast(pa.array(rng.integers(2, 500, n)), pa.string()))
    parts.append(rest)
    arrays = [p if isinstance(p, pa.Array) else pa.array(np.full(n, p, dtype=object), pa.string()) for p in parts]
    return pc.binary_join_element_wise(*arrays, "")


def problems(n: int, seed: int) -> pa.Array:
    """`n` word problems of three sentences and a question, in random template order."""
    rng = np.random.default_rng(seed)
    sentences = [_fill(t, rng, n) for t in SENTENCES]
    questions = [_fill(t, rng, n) for t in QUESTIONS]
    pick = rng.integers(0, len(SENTENCES), (3, n))
    chosen = [pc.choose(pa.array(pick[k]), *sentences) for k in range(3)]
    question = pc.choose(pa.array(rng.integers(0, len(QUESTIONS), n)), *questions)
    space = pa.array(np.full(n, " ", dtype=object), pa.string())
    return pc.binary_join_element_wise(chosen[0], chosen[1], chosen[2], question, space)


def as_pool(texts: pa.Array, answers: pa.Array, ids: pa.Array) -> pa.Table:
    n = len(texts)
    role = pa.array(np.full(n, "user", dtype=object), pa.string())
    messages = pa.StructArray.from_arrays([role, texts], names=["role", "content"])
    prompt = pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32)), messages)
    source = pa.array(np.full(n, "synthetic", dtype=object), pa.string())
    return pa.table({"problem_id": ids, "source": source, "prompt": prompt, "answer": answers, "category": source})


def format_variant(texts: pa.Array) -> pa.Array:
    return pc.replace_substring(pc.utf8_upper(texts), " ", "  ")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="pool size")
    parser.add_argument("--eval-rows", type=int, default=10_000, help="evaluation set size")
    parser.add_argument("--planted", type=float, default=0.01, help="share of the pool per planted kind")
    args = parser.parse_args()

    rng = np.random.default_rng(7)
    n, m = args.rows, min(args.eval_rows, args.rows)
    k = max(int(n * args.planted), 1)
    bench_texts = problems(m, seed=1)
    exact_src = rng.integers(0, m, k)
    number_src = rng.integers(0, m, k)
    exact = format_variant(bench_texts.take(pa.array(exact_src)))
    numbers = pc.replace_substring_regex(bench_texts.take(pa.array(number_src)), pattern=r"(\d+)", replacement=r"9\1")
    unrelated = problems(n - 3 * k, seed=2)
    copied = rng.integers(0, len(unrelated), k)
    copies = format_variant(unrelated.take(pa.array(copied)))
    texts = pa.concat_arrays([exact, numbers, unrelated, copies])
    kind = np.repeat(np.array([0, 1, 2, 3]), [k, k, len(unrelated), k])
    answer = rng.integers(0, 10**6, len(texts))
    answer[-k:] = answer[2 * k: 2 * k + len(unrelated)][copied]  # a copy keeps its original's answer
    answers = pc.cast(pa.array(answer), pa.string())
    pool = as_pool(texts, answers, pc.cast(pa.array(np.arange(len(texts))), pa.string()))
    bench = as_pool(bench_texts, pc.cast(pa.array(np.arange(m)), pa.string()),
                    pc.cast(pa.array(np.arange(m)), pa.string()))
    setup_rss = peak_rss_mb()
    print(f"built {len(texts)} pool problems and {m} evaluation problems; rss {setup_rss:.0f} MB", flush=True)

    start = time.perf_counter()
    result = deduplicate(pool, progress=lambda msg: print(msg, flush=True))
    dedup_s = time.perf_counter() - start
    kept = pool.filter(pa.array(result.keep))
    spec = ContaminationSpec()
    benchmark = Benchmark.build("eval", bench, spec)
    report = check(kept, [benchmark], spec, progress=lambda msg: print(msg, flush=True))
    wall = time.perf_counter() - start

    kept_kind = kind[result.keep]
    hit = flagged(report).to_numpy()
    counts = result.counts()
    figures = {
        "rows": len(texts),
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
        "planted_pool_copies": k,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
