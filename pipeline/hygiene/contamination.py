"""Benchmark contamination: which pool problems leak an evaluation set, per benchmark and per method.

Methods (each its own column, `<benchmark>/<method>`, never collapsed into one flag):
- `exact`: the same text after `text_forms.folded_form` (case, spacing, LaTeX spacing); catches short
  problems that have no 8-gram at all.
- `open_r1`: open-r1's `decontaminate.py`: word 8-grams after lower-casing and collapsing
  whitespace; a problem is flagged when any of its 8-grams is one of the benchmark's.
- `datatrove`: datatrove-style word 12-grams after removing punctuation and writing every number
  as `0`, which catches the same problem with changed numbers.
- `minhash` (a score, not a flag): the highest estimated Jaccard similarity of word shingles to a
  benchmark problem found by LSH, for the report.
`<benchmark>/match` names the benchmark problem behind the first flag (or the best MinHash match).

Template text never flags. An n-gram whose number-free shape (numbers written as `0`) occurs in at
least `template_min_problems` problems of the benchmark, or `pool_template_min_problems` problems
of the pool, is phrasing ("State the final answer to the following arithmetic problem: 1"), not a
problem: generators and instruction suffixes would otherwise flag everything. Setting both to 0
gives open-r1's exact rule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.core.progress import Progress
from pipeline.hygiene.dedup import CHUNK, DedupSpec, as_table, over_chunks, shingle_signatures
from pipeline.hygiene.minhash import MinHasher, Ngrams, Tokens, ngrams, similarity
from pipeline.hygiene.text_forms import datatrove_form, folded_form, number_shape, open_r1_form, problem_texts

METHODS = ("exact", "open_r1", "datatrove")
"""The flag columns per benchmark; `minhash` (a score) and `match` come beside them."""
METHOD_NOTES = {
    "exact": "same text after NFKC, lower case, whitespace and LaTeX-spacing normalisation",
    "open_r1": "open-r1 decontaminate.py: a shared word 8-gram after lower-casing and collapsing whitespace",
    "datatrove": "datatrove-style: a shared word 12-gram after removing punctuation and writing every number as 0",
}


@dataclass(frozen=True)
class ContaminationSpec:
    """How the pool is checked against evaluation sets."""

    open_r1_words: int = field(default=8, metadata={"help": "n-gram size of the open-r1 method (open-r1 uses 8)"})
    datatrove_words: int = field(default=12, metadata={
        "help": "n-gram size of the datatrove-style method (punctuation removed, numbers as 0)"})
    template_min_problems: int = field(default=3, metadata={
        "help": "an n-gram whose number-free shape occurs in this many benchmark problems is template text "
                "and never flags (0: off, open-r1's exact rule)"})
    pool_template_min_problems: int = field(default=10, metadata={
        "help": "the same, counted over the pool: instruction text repeated across the pool never flags (0: off)"})
    minhash_score: bool = field(default=True, metadata={
        "help": "add a MinHash similarity score per benchmark to the report (not a flag)"})
    shingle_words: int = field(default=5, metadata={"help": "words per MinHash shingle"})


@dataclass(frozen=True)
class NgramIndex:
    """A benchmark's n-grams that are not template text, sorted, with the first problem holding each
    and its number-free shape."""

    hashes: np.ndarray
    owner: np.ndarray
    shape: np.ndarray


def _distinct_per_doc(values: np.ndarray, doc: np.ndarray) -> np.ndarray:
    """`values` with repeats inside one document removed (each document counts once)."""
    order = np.lexsort((doc, values))
    v, d = values[order], doc[order]
    new = np.r_[True, (v[1:] != v[:-1]) | (d[1:] != d[:-1])] if v.size else np.zeros(0, bool)
    return v[new]


_BITMAP_BITS = 24


def _in_sorted(values: np.ndarray, sorted_set: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which values are in the sorted array, and where. Hashes are uniform, so a bitmap of their low
    bits rules out almost every miss before the (cache-unfriendly) binary search."""
    found, pos = np.zeros(values.size, bool), np.zeros(values.size, np.int64)
    if sorted_set.size == 0 or values.size == 0:
        return found, pos
    mask = np.uint64((1 << _BITMAP_BITS) - 1)
    bitmap = np.zeros(1 << _BITMAP_BITS, bool)
    bitmap[(sorted_set & mask).astype(np.int64)] = True
    maybe = np.flatnonzero(bitmap[(values & mask).astype(np.int64)])
    where = np.minimum(np.searchsorted(sorted_set, values[maybe]), sorted_set.size - 1)
    hit = sorted_set[where] == values[maybe]
    found[maybe[hit]], pos[maybe[hit]] = True, where[hit]
    return found, pos


def build_index(grams: Ngrams, shapes: Ngrams, min_problems: int) -> NgramIndex:
    if min_problems > 0:
        shape_values, counts = np.unique(_distinct_per_doc(shapes.hashes, shapes.doc), return_counts=True)
        template = shape_values[counts >= min_problems]
        keep = ~_in_sorted(shapes.hashes, template)[0]
    else:
        keep = np.ones(grams.hashes.size, bool)
    h, d, s = grams.hashes[keep], grams.doc[keep], shapes.hashes[keep]
    order = np.lexsort((d, h))  # first owner of each n-gram: the lowest benchmark row
    h, d, s = h[order], d[order], s[order]
    first = np.r_[True, h[1:] != h[:-1]] if h.size else np.zeros(0, bool)
    return NgramIndex(h[first], d[first], s[first])


@dataclass(frozen=True)
class _Method:
    """One n-gram method: how text is normalised, its n-gram size, and whether number-free shapes
    need their own hashes (open-r1 keeps numbers; datatrove's text has none left)."""

    name: str
    normalise: Callable[[pa.Array], pa.Array]
    words: int
    keeps_numbers: bool

    def grams(self, tokens: Tokens) -> tuple[Ngrams, Ngrams]:
        words = tokens.words(self.normalise)
        grams = ngrams(words, self.words)
        if not self.keeps_numbers:
            return grams, grams
        return grams, ngrams(words.rehashed(number_shape), self.words)


def _methods(spec: ContaminationSpec) -> list[_Method]:
    return [_Method("open_r1", open_r1_form, spec.open_r1_words, True),
            _Method("datatrove", datatrove_form, spec.datatrove_words, False)]


@dataclass(frozen=True)
class Benchmark:
    """An evaluation set prepared for checking: its canonical texts, n-gram indexes and LSH."""

    name: str
    ids: pa.Array
    texts: pa.ChunkedArray
    canonical: pa.Array
    indexes: dict[str, NgramIndex]
    signatures: np.ndarray | None
    band_keys: np.ndarray | None
    """(bands, n) band keys sorted per band, and the benchmark rows in that order."""
    band_rows: np.ndarray | None

    @classmethod
    def build(cls, name: str, problems: Any, spec: ContaminationSpec = ContaminationSpec()) -> Benchmark:
        table = as_table(problems)
        texts = problem_texts(table)
        tokens = Tokens.of(texts)
        indexes = {}
        for method in _methods(spec):
            grams, shapes = method.grams(tokens)
            indexes[method.name] = build_index(grams, shapes, spec.template_min_problems)
        words = tokens.words(folded_form)
        canon = words.texts()
        sigs = keys = rows = None
        if spec.minhash_score:
            shingles = _shingle_spec(spec)
            sigs, usable = shingle_signatures(words, shingles)
            all_keys = MinHasher(shingles.num_perm, shingles.bands).band_keys(sigs)
            usable_rows = np.flatnonzero(usable)
            order = np.argsort(all_keys[usable_rows], axis=0, kind="stable")
            rows = usable_rows[order].T
            keys = np.take_along_axis(all_keys[usable_rows], order, axis=0).T
        return cls(name, table.column("problem_id").combine_chunks(), texts, canon, indexes, sigs, keys, rows)


def _shingle_spec(spec: ContaminationSpec) -> DedupSpec:
    return DedupSpec(shingle_words=spec.shingle_words)


def _first_hits(doc: np.ndarray, owner: np.ndarray, n_docs: int) -> tuple[np.ndarray, np.ndarray]:
    flagged = np.zeros(n_docs, bool)
    match = np.full(n_docs, -1, np.int64)
    first_docs, first = np.unique(doc, return_index=True)
    flagged[first_docs] = True
    match[first_docs] = owner[first]
    return flagged, match


def check(problems: Any, benchmarks: list[Benchmark], spec: ContaminationSpec = ContaminationSpec(),
          progress: Callable[[str], None] | None = None) -> pd.DataFrame:
    """One row per pool problem: `problem_id`, then per benchmark `<name>/exact`, `<name>/open_r1`,
    `<name>/datatrove` (flags), `<name>/minhash` (score, when enabled) and `<name>/match` (the
    benchmark problem id behind the first flag, or the best MinHash match)."""
    table = as_table(problems)
    n = table.num_rows
    texts = problem_texts(table)
    methods = _methods(spec)
    # Hits per (benchmark, method), kept until the pool's template shapes are counted.
    hits: dict[tuple[int, str], list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    shape_sets = {(b, m.name): np.unique(bench.indexes[m.name].shape) for b, bench in enumerate(benchmarks)
                  for m in methods}
    shape_counts = {key: np.zeros(s.size, np.int64) for key, s in shape_sets.items()}
    exact = {b: np.full(n, -1, np.int64) for b in range(len(benchmarks))}
    scores = {b: np.zeros(n) for b in range(len(benchmarks))}
    best = {b: np.full(n, -1, np.int64) for b in range(len(benchmarks))}

    def work(lo: int) -> dict[tuple[int, str], tuple]:
        """One chunk's findings; it writes only its own rows of `exact`, `scores` and `best`."""
        tokens = Tokens.of(texts.slice(lo, CHUNK))
        words = tokens.words(folded_form)
        canon = words.texts()
        for b, bench in enumerate(benchmarks):
            exact[b][lo: lo + len(canon)] = pc.fill_null(pc.index_in(canon, value_set=bench.canonical), -1).to_numpy(
                zero_copy_only=False)
        found_here = {}
        for method in methods:
            grams, shapes = method.grams(tokens)
            for b, bench in enumerate(benchmarks):
                index = bench.indexes[method.name]
                found, pos = _in_sorted(grams.hashes, index.hashes)
                counts = None
                if spec.pool_template_min_problems > 0:
                    known = shape_sets[(b, method.name)]
                    inside, where = _in_sorted(shapes.hashes, known)
                    distinct = _distinct_per_doc(where[inside], shapes.doc[inside])
                    counts = np.bincount(distinct, minlength=known.size)
                found_here[(b, method.name)] = (
                    (grams.doc[found] + lo, index.owner[pos[found]], index.shape[pos[found]]), counts)
        if spec.minhash_score and any(bench.signatures is not None for bench in benchmarks):
            sigs, usable = shingle_signatures(words, _shingle_spec(spec))
            _best_matches(sigs, usable, benchmarks, scores, best, lo)
        return found_here

    tracker = Progress("contamination", n, progress, unit="problems") if progress and n > CHUNK else None
    for lo, found_here in over_chunks(range(0, max(n, 1), CHUNK), work):
        for key, (found, counts) in found_here.items():
            hits.setdefault(key, []).append(found)
            if counts is not None:
                shape_counts[key] += counts
        if tracker:
            tracker.update(min(lo + CHUNK, n))

    columns: dict[str, Any] = {"problem_id": table.column("problem_id").combine_chunks()}
    for b, bench in enumerate(benchmarks):
        exact_match = exact[b]
        flags = {"exact": exact_match >= 0}
        match = exact_match.copy()
        for method in methods:
            parts = hits[(b, method.name)]
            doc = np.concatenate([p[0] for p in parts])
            owner = np.concatenate([p[1] for p in parts])
            shape = np.concatenate([p[2] for p in parts])
            if spec.pool_template_min_problems > 0:
                known = shape_sets[(b, method.name)]
                common = known[shape_counts[(b, method.name)] >= spec.pool_template_min_problems]
                keep = ~_in_sorted(shape, common)[0]
                doc, owner = doc[keep], owner[keep]
            flagged, first = _first_hits(doc, owner, n)
            flags[method.name] = flagged
            match = np.where(match >= 0, match, first)
        for name in METHODS:
            columns[f"{bench.name}/{name}"] = flags[name]
        if spec.minhash_score:
            columns[f"{bench.name}/minhash"] = scores[b]
            match = np.where(match >= 0, match, best[b])
        columns[f"{bench.name}/match"] = pc.if_else(
            pa.array(match >= 0), bench.ids.take(pa.array(np.maximum(match, 0))), pa.scalar(None, pa.string())
        ) if len(bench.ids) else pa.nulls(n, pa.string())
    return pa.table(columns).to_pandas()


def _best_matches(sigs: np.ndarray, usable: np.ndarray, benchmarks: list[Benchmark],
                  scores: dict[int, np.ndarray], best: dict[int, np.ndarray], lo: int) -> None:
    """For each pool text, the benchmark problem sharing an LSH bucket with the highest estimated
    similarity (first of each bucket; buckets of one band hold near-identical texts)."""
    rows = np.flatnonzero(usable)
    for b, bench in enumerate(benchmarks):
        if bench.signatures is None or bench.band_keys is None or bench.band_keys.shape[1] == 0:
            continue
        keys = MinHasher(sigs.shape[1], bench.band_keys.shape[0]).band_keys(sigs[rows])
        for band in range(bench.band_keys.shape[0]):
            found, pos = _in_sorted(keys[:, band], bench.band_keys[band])
            mine, theirs = rows[found], bench.band_rows[band][pos[found]]
            score = similarity(sigs[mine], bench.signatures[theirs])
            better = score > scores[b][mine + lo]
            scores[b][mine[better] + lo] = score[better]
            best[b][mine[better] + lo] = theirs[better]


def flagged(report: pd.DataFrame) -> pd.Series:
    """True where any benchmark flags the problem by any method."""
    cols = [c for c in report.columns if c.rsplit("/", 1)[-1] in METHODS]
    return report[cols].any(axis=1) if cols else pd.Series(False, index=report.index)


def summary(report: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Flagged problems per benchmark and method (and `any`)."""
    out: dict[str, dict[str, int]] = {}
    for col in report.columns:
        bench, _, method = col.rpartition("/")
        if method in METHODS:
            out.setdefault(bench, {})[method] = int(report[col].sum())
    for bench in out:
        out[bench]["any"] = int(report[[f"{bench}/{m}" for m in METHODS]].any(axis=1).sum())
    return out


def decontamination_record(report: pd.DataFrame, excluded: bool) -> dict[str, Any]:
    """What a curriculum's manifest (and its Hub card) says about the check."""
    return {"excluded_flagged": excluded, "flagged": int(flagged(report).sum()), "checked": len(report),
            "benchmarks": summary(report), "methods": METHOD_NOTES,
            "template_rule": "n-grams whose number-free shape is shared by several benchmark (or pool) problems "
                             "are template text and never flag"}
