"""Duplicates with planted cases: format variants, a near-duplicate across sources, conflicting
answers, and templated problems that must stay apart."""

from functools import partial

import pandas as pd
import pyarrow as pa

from pipeline.hygiene.dedup import CONFLICT, EXACT, NEAR, DedupSpec, deduplicate
from pipeline.hygiene.text_forms import canonical
from pipeline.ingest.sources import ReasoningGymSource, reasoning_gym_rows
from pipeline.verify.equivalence import golds_agree

STORY = ("A farmer keeps chickens and goats on a small hillside farm near the river. Every morning he "
         "counts the animals in the barn before letting them out to graze in the upper meadow, and every "
         "evening he counts them again when they come home. One evening the farmer notices that some "
         "animals are missing from the barn although the gate was closed all day long. How many legs do "
         "the animals in the barn have in total if there are 7 chickens and 5 goats?")


def row(text: str, answer: str, source: str = "dataset/a") -> dict:
    return {"problem_id": f"{source}:{text[:20]}:{answer}:{len(text)}", "source": source, "category": source,
            "answer": answer, "prompt": [{"role": "user", "content": text}], "verifier": "math", "metadata": "{}"}


def test_format_variants_are_one_problem():
    variants = [r"What is \frac{1}{2} + x^{2}?", r"what is  \dfrac {1}{ 2 }+x^2 ?",
                "WHAT IS \\frac{1}{2} +\n x^{2} ?", r"What is \left( \frac{1}{2} \right) + x^{2}?"]
    forms = canonical(pa.array(variants)).to_pylist()
    assert len(set(forms[:3])) == 1
    result = deduplicate(pd.DataFrame([row(t, "x^2 + 1/2") for t in variants[:3]]))
    assert result.keep.tolist() == [True, False, False]
    dropped = result.dropped.to_pandas()
    assert set(dropped["reason"]) == {EXACT}
    assert set(dropped["kept_id"]) == {row(variants[0], "x^2 + 1/2")["problem_id"]}
    assert dropped["cluster_id"].nunique() == 1


def test_near_duplicate_across_two_sources_keeps_the_first():
    edited = STORY.replace("upper meadow", "upper field")
    pool = pd.DataFrame([row("Unrelated: what is 3 + 4?", "7", "dataset/b"), row(STORY, "38", "dataset/a"),
                         row(edited, "38", "dataset/b")])
    result = deduplicate(pool)
    assert result.keep.tolist() == [True, True, False]
    [dropped] = result.dropped.to_pylist()
    assert dropped["reason"] == NEAR and dropped["source"] == "dataset/b"
    assert dropped["kept_id"] == pool["problem_id"][1]
    assert DedupSpec().threshold <= dropped["similarity"] < 1.0
    assert deduplicate(pool, DedupSpec(near_duplicates=False)).keep.all()


def test_conflicting_answers_are_all_quarantined():
    pool = pd.DataFrame([row("Compute 2 + 2.", "4"), row("compute 2+2.", "5", "dataset/b"),
                         row("Compute 3 + 3.", "6")])
    result = deduplicate(pool)
    assert result.keep.tolist() == [False, False, True]
    dropped = result.dropped.to_pandas()
    assert set(dropped["reason"]) == {CONFLICT} and dropped["kept_id"].isna().all()
    assert dropped["cluster_id"].nunique() == 1


def test_changed_numbers_and_templates_are_not_duplicates():
    changed = STORY.replace("7 chickens and 5 goats", "9 chickens and 2 goats")
    templated = [(r.prompt, r.answer) for r in reasoning_gym_rows(ReasoningGymSource("chain_sum", (0, 1), 8))]
    pool = pd.DataFrame([row(STORY, "38"), row(changed, "26")] + [row(p, a) for p, a in dict(templated).items()])
    result = deduplicate(pool)
    assert result.keep.all(), result.dropped.to_pandas()[["reason", "text"]]


def test_empty_pool():
    empty = pd.DataFrame([row("x", "1")]).iloc[:0]
    result = deduplicate(empty)
    assert result.keep.size == 0 and result.dropped.num_rows == 0


def with_system(text: str, answer: str, system: str, source: str = "dataset/a") -> dict:
    out = row(text, answer, source)
    out["problem_id"] += ":" + system
    out["prompt"] = [{"role": "system", "content": system}, *out["prompt"]]
    return out


def test_what_the_model_sees_differently_is_never_one_problem():
    """A system prompt, a superscript and a variable's case change the problem: no pair below is a
    copy, so none is dropped, as conflicting or otherwise."""
    pool = pd.DataFrame([
        row("What is 5 in base 10?", "5"), with_system("What is 5 in base 10?", "101", "Answer in binary."),
        row("Compute 2³ + 1.", "9"), row("Compute 23 + 1.", "24"),
        row("What is A?", "1"), row("What is a?", "2"),
        row(r"What is \Delta x?", "3"), row(r"What is \delta x?", "4"),
        row(STORY, "38"), with_system(STORY, "38", "Answer in French."),  # same answer: still not a near-duplicate
    ])
    result = deduplicate(pool)
    assert result.keep.all(), result.dropped.to_pandas()[["reason", "text", "answer"]]


def test_superscripts_meet_their_caret_form():
    forms = canonical(pa.array(["Compute 2³ + 1.", "compute 2^{3}+1.", "Compute 2^3 + 1.", "Compute 23 + 1.",
                                "x₁ + x¹⁰", "x_1 + x^{10}"])).to_pylist()
    assert forms[0] == forms[1] == forms[2] != forms[3]
    assert forms[4] == forms[5]


def test_golds_that_are_mathematically_equal_are_not_a_conflict(verifier_pool):
    pool = pd.DataFrame([row("Compute 20 / 2.", "10"), row("compute 20/2.", "10.0", "dataset/b"),
                         row("What is one half?", "1/2"), row("What is one half ?", "0.5", "dataset/b"),
                         row("Compute 2 + 2.", "4"), row("compute 2+2.", "5", "dataset/b")])
    result = deduplicate(pool, same_answer=partial(golds_agree, verifier_pool))
    assert result.keep.tolist() == [True, False, True, False, False, False]
    dropped = result.dropped.to_pandas().set_index("problem_id")
    assert dropped["reason"].to_dict() == {pool["problem_id"][1]: EXACT, pool["problem_id"][3]: EXACT,
                                           pool["problem_id"][4]: CONFLICT, pool["problem_id"][5]: CONFLICT}
    assert dropped["kept_id"][pool["problem_id"][1]] == pool["problem_id"][0]


def test_copies_in_different_chunks_of_the_pool_are_one_problem():
    """The prompt column of a large pool comes in chunks; a copy in a chunk that also holds a
    system-prompted problem is the same problem as its twin in a chunk that holds none."""
    first = pa.Table.from_pandas(pd.DataFrame([row("Compute 17 * 3.", "51")]), preserve_index=False)
    second = pa.Table.from_pandas(pd.DataFrame([
        with_system("Name a colour.", "red", "Answer in French."), row("compute  17*3.", "51", "dataset/b"),
    ]), preserve_index=False)
    pool = pa.concat_tables([first, second.cast(first.schema)])
    assert pool.column("prompt").num_chunks == 2
    result = deduplicate(pool)
    assert result.keep.tolist() == [True, True, False]
    assert result.dropped.to_pandas()["reason"].tolist() == [EXACT]
