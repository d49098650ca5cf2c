"""Duplicate problems: exact copies after normalisation, near-duplicates by MinHash-LSH, and
copies whose gold answers disagree. A copy is a copy of what the model sees: the same user text
under another system prompt is another problem, and so is one a superscript or a variable's case
tells apart (`pipeline.hygiene.text_forms.canonical_form`).

Near-duplicates must also agree on their gold answer: generators and templated datasets produce
problems whose texts differ in one number or one noun (`4 ducks` / `4 ants`) and whose answers
differ, and those are different problems, not copies. (Changed numbers matter for contamination,
where `pipeline.hygiene.contamination` checks them.)

One problem per cluster is kept, always the first in pool order (source order), so reruns keep
the same ones. Identical problems with different gold answers are a data error: every copy is set
aside as `conflicting_answers` and none is kept, because picking one would guess. Answers that
differ as text but not as math (`10` and `10.0`, `1/2` and `0.5`) are asked of the verifier first,
where one is given (`same_answer`): copies carrying them are duplicates, not a conflict.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from pipeline.core.progress import Progress
from pipeline.core.records import Record
from pipeline.hygiene.minhash import MinHasher, Tokens, Words, mix, ngrams, similarity
from pipeline.hygiene.text_forms import canonical, canonical_form, folded_form, problem_texts, prompt_contexts

EXACT, NEAR, CONFLICT = "exact_duplicate", "near_duplicate", "conflicting_answers"
CHUNK = 50_000
"""Problems hashed at a time: bounds memory on a million-row pool."""
THREADS = 2
"""Chunks worked on at once. Arrow's kernels and numpy release the GIL, so threads use both cores
of a small machine; each chunk in flight holds its own working memory."""

T = TypeVar("T")
Gold = tuple[str, str, str]
"""(verifier, gold answer, metadata) of one problem."""
SameAnswer = Callable[[list[tuple[Gold, Gold]]], list[bool]]
"""For pairs of golds, whether each pair says the same (`pipeline.verify.equivalence.golds_agree`)."""


def over_chunks(starts: range, work: Callable[[int], T]) -> Iterator[tuple[int, T]]:
    """`(lo, work(lo))` for each chunk start, in order, `THREADS` chunks at a time (one more is
    held while the caller consumes it)."""
    with ThreadPoolExecutor(THREADS) as pool:
        pending: deque = deque()
        for lo in starts:
            pending.append((lo, pool.submit(work, lo)))
            if len(pending) > THREADS:
                lo_done, future = pending.popleft()
                yield lo_done, future.result()
        while pending:
            lo_done, future = pending.popleft()
            yield lo_done, future.result()


@dataclass(frozen=True)
class DedupSpec:
    """How duplicate problems are found."""

    near_duplicates: bool = field(default=True, metadata={
        "help": "also drop near-duplicates (MinHash-LSH on word shingles), not only exact copies after normalisation"})
    threshold: float = field(default=0.9, metadata={
        "help": "estimated Jaccard similarity of word shingles at or above which two problems are near-duplicates"})
    shingle_words: int = field(default=5, metadata={
        "help": "words per shingle; longer shingles make one changed word weigh more"})
    num_perm: int = field(default=64, metadata={"help": "MinHash permutations (a multiple of bands)"})
    bands: int = field(default=16, metadata={
        "help": "LSH bands: more bands find more candidate pairs below the threshold (each is verified)"})

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold {self.threshold} must be in (0, 1]")
        MinHasher(self.num_perm, self.bands)  # validates the banding


@dataclass(frozen=True)
class DuplicateProblem(Record):
    """A problem left out of the labelled pool, and the cluster it belongs to."""

    problem_id: str
    source: str
    category: str
    reason: str
    """`exact_duplicate`, `near_duplicate` or `conflicting_answers`."""
    cluster_id: int
    """Clusters are numbered in pool order of their first member."""
    kept_id: str | None
    """The problem kept for this cluster; none for `conflicting_answers`."""
    similarity: float
    """Estimated Jaccard similarity to the kept problem (1 for exact copies)."""
    text: str
    answer: str

    SCHEMA: ClassVar[pa.Schema] = pa.schema([
        ("problem_id", pa.string()), ("source", pa.string()), ("category", pa.string()),
        ("reason", pa.string()), ("cluster_id", pa.int64()), ("kept_id", pa.string()),
        ("similarity", pa.float64()), ("text", pa.string()), ("answer", pa.string()),
    ])


@dataclass(frozen=True)
class Deduplicated:
    """The outcome: which pool rows are kept, and a `DuplicateProblem` table of the others."""

    keep: np.ndarray
    dropped: pa.Table

    def counts(self) -> dict[str, int]:
        reasons = pc.value_counts(self.dropped.column("reason")).to_pylist() if self.dropped.num_rows else []
        return {"kept": int(self.keep.sum()), **{r["values"]: r["counts"] for r in reasons}}


def as_table(frame: Any) -> pa.Table:
    return frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)


def shingle_signatures(words: Words, spec: DedupSpec) -> tuple[np.ndarray, np.ndarray]:
    """MinHash signatures of texts' (folded) words, and which texts have any word at all."""
    hasher = MinHasher(spec.num_perm, spec.bands)
    sigs = hasher.signatures(ngrams(words, spec.shingle_words, short_texts=True))
    return sigs, np.bincount(words.doc, minlength=words.n_docs) > 0


def canonical_keys(texts: pa.Array | pa.ChunkedArray, spec: DedupSpec | None,
                   progress: Callable[[str], None] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 128-bit key of each text's canonical form (`Words.sequence_keys`) and, with a spec, the
    MinHash signatures of its folded words (and which texts have any), a chunk of texts at a
    time: one tokenisation serves both, and no canonical text is kept."""
    n = len(texts)
    keys = np.zeros((n, 2), np.uint64)
    sigs = np.empty((n, spec.num_perm if spec else 0), np.uint32)
    has_words = np.zeros(n, bool)

    def work(lo: int) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
        tokens = Tokens.of(texts.slice(lo, CHUNK))
        return (tokens.words(canonical_form).sequence_keys(),
                shingle_signatures(tokens.words(folded_form), spec) if spec else None)

    tracker = Progress("canonical forms and MinHash", n, progress, unit="texts") if progress and n > CHUNK else None
    for lo, (part, signed) in over_chunks(range(0, n, CHUNK), work):
        keys[lo: lo + CHUNK] = part
        if signed:
            sigs[lo: lo + CHUNK], has_words[lo: lo + CHUNK] = signed
        if tracker:
            tracker.update(min(lo + CHUNK, n))
    return keys, sigs, has_words


def groups_in_order(keys: np.ndarray) -> np.ndarray:
    """Each row's group of equal keys, groups numbered in order of their first row."""
    if keys.shape[0] == 0:
        return np.zeros(0, np.int64)
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    rank = np.empty(first.size, np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(first.size)
    return rank[inverse.reshape(-1)]


def near_duplicate_roots(sigs: np.ndarray, usable: np.ndarray, answer_id: np.ndarray, spec: DedupSpec) -> np.ndarray:
    """For each row, the first row (in order) of its near-duplicate component. Within every LSH
    bucket each member is compared with the bucket's first member, and linked when their estimated
    similarity reaches the threshold: no pairwise blow-up in large buckets. `answer_id` (the
    canonical answer and the prompt's context) is part of every bucket key, so only problems with
    the same answer under the same system prompt are ever linked."""
    n = sigs.shape[0]
    keys = MinHasher(spec.num_perm, spec.bands).band_keys(sigs) ^ mix(answer_id.astype(np.uint64) + np.uint64(1))[:, None]
    sources, targets = [], []
    rows = np.flatnonzero(usable)
    for band in range(spec.bands):
        k = keys[rows, band]
        order = rows[np.argsort(k, kind="stable")]
        ks = keys[order, band]
        start = np.r_[True, ks[1:] != ks[:-1]]
        first = order[np.flatnonzero(start)[np.cumsum(start) - 1]]
        pair = order != first
        a, b = order[pair], first[pair]
        close = similarity(sigs[a], sigs[b]) >= spec.threshold
        sources.append(a[close])
        targets.append(b[close])
    src, dst = np.concatenate(sources), np.concatenate(targets)
    graph = coo_matrix((np.ones(src.size, np.int8), (src, dst)), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    # Components are labelled in order of their lowest row, which is therefore the root.
    roots = np.full(label.max() + 1 if n else 0, n, np.int64)
    np.minimum.at(roots, label, np.arange(n))
    return roots[label]


def agreeing_answers(table: pa.Table, group: np.ndarray, answer_id: np.ndarray, same_answer: SameAnswer) -> np.ndarray:
    """`answer_id` with each answer of an exact-copy group that `same_answer` finds equal to the
    group's first answer given that first answer's id (other answers keep theirs)."""
    first_row = {}
    pairs: dict[tuple[int, int], int] = {}  # (group, answer id) → a row carrying it
    for row in range(len(group)):
        first = first_row.setdefault(int(group[row]), row)
        if answer_id[row] != answer_id[first]:
            pairs.setdefault((int(group[row]), int(answer_id[row])), row)
    if not pairs:
        return answer_id
    columns = [table.column(c).to_pylist() for c in ("verifier", "answer", "metadata")]
    gold = lambda row: tuple(column[row] for column in columns)  # noqa: E731
    rows = list(pairs.values())
    agree = same_answer([(gold(first_row[int(group[row])]), gold(row)) for row in rows])
    merged = answer_id.copy()
    for (g, answer), row, same in zip(pairs, rows, agree):
        if same:
            merged[(group == g) & (answer_id == answer)] = answer_id[first_row[g]]
    return merged


def deduplicate(problems: Any, spec: DedupSpec = DedupSpec(), progress: Callable[[str], None] | None = None,
                same_answer: SameAnswer | None = None) -> Deduplicated:
    """Cluster the pool's duplicates and keep the first problem of each cluster. Without
    `same_answer`, answers agree only when their canonical texts do."""
    table = as_table(problems)
    n = table.num_rows
    texts = problem_texts(table)
    keys, all_sigs, all_usable = canonical_keys(texts, spec if spec.near_duplicates else None, progress)
    context = prompt_contexts(table)
    group = groups_in_order(np.column_stack([keys, context.astype(np.uint64)]))
    answers = canonical(table.column("answer").combine_chunks())
    answer_id = pc.dictionary_encode(answers).indices.to_numpy(zero_copy_only=False).astype(np.int64)
    if same_answer is not None:
        answer_id = agreeing_answers(table, group, answer_id, same_answer)

    # Groups (canonical texts) are numbered in order of first appearance, so a group's first row
    # is its lowest.
    n_groups = int(group.max()) + 1 if n else 0
    first = np.full(n_groups, n, np.int64)
    np.minimum.at(first, group, np.arange(n))
    pairs = np.unique(group * (int(answer_id.max()) + 1 if n else 1) + answer_id)
    answers_per_group = np.bincount(pairs // (int(answer_id.max()) + 1 if n else 1), minlength=n_groups)
    conflict = answers_per_group[group] > 1

    reps = first[answers_per_group == 1]  # already sorted: groups come in order of appearance
    kept_of = first[group]  # the row each row's exact copy cluster keeps
    sim = np.ones(n)
    if spec.near_duplicates and reps.size:
        sigs, usable = all_sigs[reps], all_usable[reps]
        root = near_duplicate_roots(sigs, usable, groups_in_order(np.column_stack([answer_id, context])[reps]), spec)
        rep_sim = similarity(sigs, sigs[root])
        rep_kept = np.full(n, -1, np.int64)
        rep_kept[reps] = reps[root]
        rep_sim_of = np.ones(n)
        rep_sim_of[reps] = rep_sim
        kept_of = np.where(conflict, kept_of, rep_kept[first[group]])
        sim = np.where(conflict, 1.0, rep_sim_of[first[group]])

    keep = (kept_of == np.arange(n)) & ~conflict
    dropped = np.flatnonzero(~keep)
    kept_rows = np.where(conflict, first[group], kept_of)[dropped]
    # One cluster per kept row (or per conflicting group's first row), numbered in pool order.
    _, cluster = np.unique(kept_rows, return_inverse=True)
    same_text = group[dropped] == group[kept_rows]
    reason = np.where(conflict[dropped], CONFLICT, np.where(same_text, EXACT, NEAR))
    ids = table.column("problem_id").combine_chunks()
    out = pa.table({
        "problem_id": ids.take(pa.array(dropped)),
        "source": table.column("source").combine_chunks().take(pa.array(dropped)),
        "category": table.column("category").combine_chunks().take(pa.array(dropped)),
        "reason": pa.array(reason, pa.string()),
        "cluster_id": pa.array(cluster.astype(np.int64)),
        "kept_id": pc.if_else(pa.array(conflict[dropped]), pa.scalar(None, pa.string()),
                              ids.take(pa.array(kept_rows))),
        "similarity": pa.array(np.where(same_text, 1.0, sim[dropped])),
        "text": texts.take(pa.array(dropped)),
        "answer": table.column("answer").combine_chunks().take(pa.array(dropped)),
    }).cast(DuplicateProblem.SCHEMA)
    return Deduplicated(keep, out)

