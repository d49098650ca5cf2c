"""Contamination with planted cases, per benchmark and per method."""

import pandas as pd
import pytest

from pipeline.export.hub import _decontamination
from pipeline.hygiene.contamination import METHODS, Benchmark, ContaminationSpec, check, decontamination_record, flagged
from pipeline.ingest.benchmarks import DEFAULT_BENCHMARK, EvaluationSet, default_evaluation_set, load_evaluation_sets
from pipeline.ingest.sources import ReasoningGymSource

GSM = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "Weng earns 12 dollars an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
    "How much did she earn?",
    "What is the sum of 3 and 5?",
]
OTHER = ["A train leaves the station at 9 am travelling at 60 miles per hour toward a city 240 miles away. "
         "At what time does it arrive?"]


def frame(texts, prefix="p"):
    return pd.DataFrame([{"problem_id": f"{prefix}{i}", "answer": "1", "prompt": [{"role": "user", "content": t}]}
                         for i, t in enumerate(texts)])


@pytest.fixture(scope="module")
def report():
    pool = {
        "case_space": GSM[0].upper().replace(" ", "   "),
        "changed_numbers": GSM[0].replace("48", "52"),
        "reordered": "Yesterday, she just did 50 minutes of babysitting. Weng earns 12 dollars an hour for "
                     "babysitting. How much did she earn?",
        "paraphrase": "A girl named Natalia sells hair clips: 48 to friends during April, and half that number "
                      "in May. Find the total she sold over the two months.",
        "common_phrase": "What is the sum of 7 and 9?",
        "short_copy": "what is the sum of 3 and 5 ?",
        "unrelated": "Find the area of a rectangle whose sides are 4 and 7 centimetres long.",
    }
    benchmarks = [Benchmark.build("gsm", frame(GSM, "g")), Benchmark.build("trains", frame(OTHER, "t"))]
    out = check(frame(list(pool.values())), benchmarks)
    out.index = list(pool)
    return out


def test_columns_are_per_benchmark_and_method(report):
    for bench in ("gsm", "trains"):
        assert {f"{bench}/{m}" for m in (*METHODS, "minhash", "match")} <= set(report.columns)
    assert not flagged(report[[c for c in report.columns if c.startswith("trains/")] + ["problem_id"]]).any()


def test_planted_cases(report):
    gsm = report[[f"gsm/{m}" for m in METHODS]]
    assert gsm.loc["case_space"].all()
    assert report.loc["case_space", "gsm/match"] == "g0"
    assert not report.loc["changed_numbers", "gsm/exact"]
    assert report.loc["changed_numbers", "gsm/datatrove"] and report.loc["changed_numbers", "gsm/match"] == "g0"
    assert report.loc["reordered", "gsm/open_r1"] and report.loc["reordered", "gsm/match"] == "g1"
    assert not gsm.loc["paraphrase"].any() and not gsm.loc["common_phrase"].any() and not gsm.loc["unrelated"].any()
    # Too short for any n-gram: only the exact method sees the copy.
    assert gsm.loc["short_copy"].tolist() == [True, False, False]
    assert report.loc["case_space", "gsm/minhash"] == 1.0
    assert report.loc["unrelated", "gsm/minhash"] < 0.5


def test_template_text_never_flags_but_the_same_problem_does():
    """Generator problems share their template with every benchmark problem of that generator."""
    template = "State the final answer to the following arithmetic problem: {} + {} - {} ="
    bench = frame([template.format(a, b, c) for a, b, c in [(1, 2, 3), (4, 5, 6), (7, 8, 9), (1, 5, 9)]], "b")
    pool = frame([template.format(1, 9, 9), template.format(2, 2, 2), template.format(7, 8, 9)])
    out = check(pool, [Benchmark.build("arith", bench)])
    assert out["arith/exact"].tolist() == [False, False, True]
    assert not out[["arith/open_r1", "arith/datatrove"]].iloc[:2].any().any()
    # open-r1's rule without the template filter flags them all.
    raw = ContaminationSpec(template_min_problems=0, pool_template_min_problems=0)
    assert check(pool, [Benchmark.build("arith", bench, raw)], raw)["arith/open_r1"].all()


def test_instruction_repeated_across_the_pool_never_flags():
    suffix = " Please reason step by step and put your final answer within the box at the end."
    bench = frame(["Compute the product of eleven and twelve." + suffix])
    pool = frame([f"Problem number {i} about apples." + suffix for i in range(12)])
    out = check(pool, [Benchmark.build("b", bench)])
    assert not flagged(out).any()
    strict = ContaminationSpec(pool_template_min_problems=0)
    assert check(pool, [Benchmark.build("b", bench, strict)], strict)["b/open_r1"].all()


def test_default_evaluation_set_is_heldout_and_loads_like_a_source(tmp_path):
    sources = [ReasoningGymSource(n, (0, 1), 3) for n in ("chain_sum", "leg_counting")]
    spec = default_evaluation_set(sources)
    assert spec.name == DEFAULT_BENCHMARK
    assert all(h.seed != s.base_seed for h, s in zip(spec.generators, sources))
    problems, bad = load_evaluation_sets([spec], tmp_path)
    assert len(problems) == 12 and not len(bad) and set(problems["benchmark"]) == {DEFAULT_BENCHMARK}


def test_local_evaluation_set_and_bad_specs(tmp_path):
    path = tmp_path / "bench.jsonl"
    path.write_text("\n".join(f'{{"question": "q{i} text", "solution": "{i}"}}' for i in range(3)) + "\n")

    spec = EvaluationSet("mine", path=str(path), prompt_field="question", answer_field="solution")
    problems, _ = load_evaluation_sets([spec], tmp_path)
    assert problems["answer"].tolist() == ["0", "1", "2"]
    with pytest.raises(ValueError, match="exactly one of generators, path or hub"):
        EvaluationSet("both", path=str(path), hub="org/name")
    with pytest.raises(ValueError, match="unique"):
        load_evaluation_sets([spec, spec], tmp_path)


def test_an_evaluation_set_with_no_usable_problem_is_refused_naming_it(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    blank = tmp_path / "bench.jsonl"
    blank.write_text('{"problem": "   ", "answer": "4"}\n')
    with pytest.raises(ValueError, match="evaluation set 'nothing' has no usable problem"):
        load_evaluation_sets([EvaluationSet("nothing", path=str(empty))], tmp_path)
    with pytest.raises(ValueError, match=r"'blank' has no usable problem \(1 rows quarantined\)"):
        load_evaluation_sets([EvaluationSet("blank", path=str(blank))], tmp_path)


def test_card_says_which_benchmarks_and_how(report):
    record = decontamination_record(report, excluded=True)
    assert record["flagged"] == int(flagged(report).sum())
    text = _decontamination(record)
    assert "`gsm`" in text and "`trains`" in text and "open-r1" in text and "left out" in text
    assert "not checked" in _decontamination(None)
