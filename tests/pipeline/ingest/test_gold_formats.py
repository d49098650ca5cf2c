"""Golds in the formats real datasets use (tests/data: a GSM8K-format file, a MATH-format file, a
bare-LaTeX-gold file), read into canonical golds at ingest and scored against hand-written
completions; the instruction a dataset adds to its prompts; float golds as exact decimals."""

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from pipeline.core.records import Problem
from pipeline.core.storage import write_parquet_atomic
from pipeline.curriculum.build import stratify, to_verl
from pipeline.difficulty.strata import Strata
from pipeline.ingest.golds import Rejected, canonical_gold
from pipeline.ingest.sources import DatasetSource, load_problems
from pipeline.verify.extraction import extract_answer
from pipeline.verify.verification import VerificationTask

DATA = Path(__file__).resolve().parents[2] / "data"
GSM8K = DatasetSource(str(DATA / "gsm8k_format.jsonl"), prompt_field="question")
MATH = DatasetSource(str(DATA / "math_format.jsonl"), answer_field="solution", category_field="type")
LATEX = DatasetSource(str(DATA / "latex_golds.jsonl"))

CANONICAL = {
    GSM8K: ["54", "252", "1250", "9", "15", "30"],
    MATH: ["\\frac{5}{6}", "2\\sqrt{13}", "(2, 3)", "(-2, 2)", "\\frac{\\pi}{2}", "391"],
    LATEX: ["\\frac{\\pi}{2}", "(2, 3)", "3\\sqrt{13}", "\\frac{5}{2}", "\\{1, 2\\}", "6"],
}

# (source, row, completion, expected pass): the answers models write for these problems.
COMPLETIONS = [
    (GSM8K, 0, "36 / 2 = 18 in the afternoon, 36 + 18 = 54.\n#### 54", True),
    (GSM8K, 0, "36 / 2 = 18 in the afternoon.\n#### 18", False),
    (GSM8K, 1, "3 weeks is 21 days and 21 * 12 = 252. The answer is 252.", True),
    (GSM8K, 2, "25 * 50 = 1,250 dollars.\n#### 1,250", True),
    (GSM8K, 2, "25 * 50 = 1250 so \\boxed{1250}", True),
    (GSM8K, 3, "15 - 4 - 2 = 9 apples. The answer is 9.", True),
    (GSM8K, 3, "15 - 4 = 11 apples. The answer is 11.", False),
    (GSM8K, 5, "7.50 * 4 = 30.00\n#### $30.00", True),
    (MATH, 0, "$\\frac{3}{6} + \\frac{2}{6} = \\boxed{\\dfrac{5}{6}}$", True),
    (MATH, 0, "The sum is $\\frac{2}{5}$.", False),
    (MATH, 1, "The distance is $\\sqrt{52}$, so the answer is $\\boxed{2\\sqrt{13}}$.", True),
    (MATH, 1, "The distance is \\boxed{2}.", False),
    (MATH, 2, "So $x = 2$, $y = 3$: \\boxed{(2, 3)}", True),
    (MATH, 2, "So $x = 3$, $y = 2$: \\boxed{(3, 2)}", False),
    (MATH, 3, "Between the roots: \\boxed{(-2, 2)}", True),
    (MATH, 3, "Between the roots: \\boxed{[-2, 2]}", False),
    (MATH, 4, "A quarter turn. Final Answer: The final answer is $\\frac{\\pi}{2}$. I hope it is correct.", True),
    (MATH, 5, "17 * 23 = 391. The answer is 391.", True),
    (LATEX, 0, "$x = \\boxed{\\frac{\\pi}{2}}$", True),
    (LATEX, 0, "$x = \\boxed{\\pi}$", False),
    (LATEX, 1, "The answer is (2, 3).", True),
    (LATEX, 1, "\\boxed{(5, 3)}", False),
    (LATEX, 2, "\\boxed{3\\sqrt{13}}", True),
    (LATEX, 2, "\\boxed{3}", False),
    (LATEX, 3, "That is \\boxed{2.5}", True),
    (LATEX, 4, "The roots are \\boxed{\\{2, 1\\}}", True),
    (LATEX, 5, "There are \\boxed{6} ways.", True),
]


@pytest.fixture(scope="module")
def loaded(verifier_pool):
    return load_problems(datasets=[GSM8K, MATH, LATEX], pool=verifier_pool)


def by_source(problems: list[Problem], src: DatasetSource) -> list[Problem]:
    return [p for p in problems if p.source == f"dataset/{Path(src.path).name}"]


def test_each_format_ingests_with_canonical_golds(loaded) -> None:
    assert loaded.quarantined == []  # the GSM8K rationale saying "either ... or" is not ambiguous
    for src, golds in CANONICAL.items():
        assert [p.answer for p in by_source(loaded.problems, src)] == golds


def test_the_solution_stays_in_the_metadata(loaded) -> None:
    [first_gsm8k] = by_source(loaded.problems, GSM8K)[:1]
    assert json.loads(first_gsm8k.metadata)["answer"].endswith("#### 54")
    first_math = by_source(loaded.problems, MATH)[0]
    meta = json.loads(first_math.metadata)
    assert meta["solution"].endswith("\\boxed{\\frac{5}{6}}$.") and meta["level"] == "Level 1"
    # A gold taken as written is not repeated in the metadata.
    assert "answer" not in json.loads(by_source(loaded.problems, LATEX)[5].metadata)


def test_hand_written_completions_score_against_the_canonical_golds(loaded, verifier_pool) -> None:
    tasks = []
    for src, row, text, _ in COMPLETIONS:
        problem = by_source(loaded.problems, src)[row]
        tasks.append(VerificationTask("math", problem.answer, extract_answer(text, verifier="math")))
    verdicts = verifier_pool.verify_many(tasks)
    assert [v.passed for v in verdicts] == [expected for *_, expected in COMPLETIONS]


@pytest.mark.parametrize(
    ("text", "gold_format", "gold"),
    [
        ("He has 5 + 4 = <<5+4=9>>9.\n#### 9", "gsm8k", "9"),
        ("He has 5 + 4 = 9.\n#### 9", "auto", "9"),
        ("#### 1,234,567", "gsm8k", "1234567"),
        ("#### $18", "gsm8k", "18"),
        ("So \\boxed{\\frac{1}{2}}.", "boxed_solution", "\\frac{1}{2}"),
        ("So $\\boxed{x = 5}$ and then \\boxed{x = 5} again.", "auto", "x = 5"),
        ("$\\frac{\\pi}{2}$", "latex", "\\frac{\\pi}{2}"),
        ("\\(3\\sqrt{13}\\)", "auto", "3\\sqrt{13}"),
        ("$x$ or $y$", "latex", "$x$ or $y$"),  # not one span: kept, then found ambiguous at ingest
        ("1e+16", "plain", "10000000000000000"),
        ("2.5e-05", "auto", "0.000025"),
        ("#### 9", "plain", "#### 9"),
        ("\\boxed{7}", "auto", "7"),
    ],
)
def test_canonical_gold(text: str, gold_format: str, gold: str) -> None:
    assert canonical_gold(text, gold_format, "math") == gold


@pytest.mark.parametrize(
    ("text", "gold_format", "reason"),
    [
        ("He has 9 apples.", "gsm8k", "unusable_answer"),
        ("#### ", "gsm8k", "unusable_answer"),
        ("So the answer is 5.", "boxed_solution", "unusable_answer"),
        ("\\boxed{}", "auto", "unusable_answer"),
        ("#### 9\nor maybe\n#### 10", "gsm8k", "ambiguous_answer"),
        ("Either \\boxed{2} or \\boxed{3}.", "auto", "ambiguous_answer"),
    ],
)
def test_golds_a_format_cannot_read_are_refused_with_the_reason(text: str, gold_format: str, reason: str) -> None:
    with pytest.raises(Rejected) as refused:
        canonical_gold(text, gold_format, "math")
    assert refused.value.reason == reason
    assert f"gold_format {gold_format}" in str(refused.value)


def test_reasoning_gym_golds_are_kept_as_written() -> None:
    assert canonical_gold("#### 9", "auto", "reasoning_gym") == "#### 9"


def test_a_gold_math_verify_cannot_read_is_quarantined_saying_so(tmp_path, verifier_pool) -> None:
    path = tmp_path / "words.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [{"problem": "Is 7 prime?", "answer": "yes"},
                                                      {"problem": "What is 2 + 2?", "answer": "4"}]))
    out = load_problems(datasets=[DatasetSource(str(path))], pool=verifier_pool)
    [bad] = out.quarantined
    assert bad.reason == "unusable_answer"
    assert "math-verify cannot parse the gold answer: 'yes'" in bad.detail and "gold_format" in bad.detail


def test_float_golds_are_exact_decimals(tmp_path, verifier_pool) -> None:
    """Issue 22, case 5: JSON and Parquet floats 1e16 and 2.5e-05 as golds."""
    rows = [{"problem": "How many grains?", "answer": 1e16}, {"problem": "How small?", "answer": 2.5e-05}]
    jsonl = tmp_path / "floats.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows))
    parquet = tmp_path / "floats.parquet"
    write_parquet_atomic(pa.Table.from_pylist(rows), parquet)
    for path in (jsonl, parquet):
        problems = load_problems(datasets=[DatasetSource(str(path))], pool=verifier_pool).problems
        assert [p.answer for p in problems] == ["10000000000000000", "0.000025"]
        verdicts = verifier_pool.verify_many([VerificationTask("math", p.answer, a) for p in problems
                                              for a in (p.answer, "1", "2.5")])
        assert [v.passed for v in verdicts] == [True, False, False, True, False, False]


def test_an_instruction_is_part_of_the_problem(tmp_path) -> None:
    suffix = "Let's think step by step and output the final answer after \"####\"."
    prefix = "Please reason step by step, and put your final answer within \\boxed{}.\n"
    plain = load_problems(datasets=[GSM8K]).problems[0]
    after = load_problems(datasets=[DatasetSource(GSM8K.path, prompt_field="question", instruction=suffix)]).problems[0]
    before = load_problems(datasets=[DatasetSource(GSM8K.path, prompt_field="question", instruction=prefix,
                                                   instruction_position="prefix", system_prompt="Be brief.")]).problems[0]
    question = plain.prompt[-1]["content"]
    assert after.prompt == [{"role": "user", "content": question + " " + suffix}]
    assert before.prompt == [{"role": "system", "content": "Be brief."},
                             {"role": "user", "content": prefix + question}]
    assert len({plain.problem_id, after.problem_id, before.problem_id}) == 3  # another prompt, another problem
    assert plain.answer == after.answer == "54"

    # Staged rows carry the prompt exactly as labelled.
    frame = Problem.to_frame([after])
    labels = pd.DataFrame({"problem_id": [after.problem_id], "successes": [2], "trials": [4], "pass_rate": [0.5],
                           "ci_low": [0.15], "ci_high": [0.85]})
    staged = to_verl(stratify(frame, labels, Strata())).to_pylist()
    assert staged[0]["prompt"] == after.prompt
    assert staged[0]["reward_model"]["ground_truth"] == "54"


@pytest.mark.parametrize(
    ("options", "message"),
    [({"gold_format": "gsm"}, "gold_format"), ({"instruction_position": "middle"}, "instruction_position"),
     ({"instruction": "  "}, "instruction is blank")],
)
def test_bad_settings_are_refused(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DatasetSource("x.jsonl", **options)
