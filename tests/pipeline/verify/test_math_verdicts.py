"""Math verdicts as math-verify means them, through gradus's whole route (extraction, fast path,
workers), against the case table in math_cases.py; reasoning-gym verdicts exactly as each
generator's `score_answer` gives them on the answer gradus extracts."""

import json
from collections import Counter

import pytest
import reasoning_gym

from pipeline.verify import verification
from pipeline.verify.extraction import as_math, ascii_digits, exact_decimal, extract_answer
from pipeline.verify.verification import VerificationTask, VerifierPool
from tests.pipeline.verify.math_cases import CASES

KNOWN_DISAGREEMENTS = {
    ("math_verify_style", "$e^{i\\pi}$", "$-1$"): "math-verify does not evaluate e^{i pi} (strict, never lenient)",
}
"""Cases where gradus's verdict differs from the expected one, each with why; none may pass a wrong answer."""


@pytest.fixture(scope="module")
def checker() -> verification._Checker:
    """The worker's own checks, run here (main thread: math-verify's alarms work)."""
    return verification._Checker(inner_timeout=5, allow_debug=False)


def test_every_case_through_the_pool(verifier_pool: VerifierPool) -> None:
    tasks = [VerificationTask("math", gold, extract_answer(text, verifier="math")) for _, gold, text, _ in CASES]
    verdicts = verifier_pool.verify_many(tasks)
    wrong = {(kind, gold, text): expected for (kind, gold, text, expected), v in zip(CASES, verdicts)
             if v.passed != expected}
    assert set(wrong) == set(KNOWN_DISAGREEMENTS)
    assert all(wrong.values())  # every disagreement fails a right answer: none passes a wrong one
    per_kind = Counter(kind for kind, *_ in CASES)
    assert per_kind == {"math_verify_style": 60, "realistic": 50, "bare_latex_gold": 17, "digits": 6}


@pytest.mark.parametrize(("kind", "gold", "text", "expected"), CASES)
def test_the_fast_path_gives_the_workers_verdict(checker, kind: str, gold: str, text: str, expected: bool) -> None:
    answer = extract_answer(text, verifier="math")
    assert answer is not None
    fast = verification.fast_result("math", gold, answer)
    if fast is not None:
        assert fast == checker.run(("verify", "math", gold, answer, "{}"))


@pytest.mark.parametrize(
    ("completion", "answer"),
    [
        (r"so \boxed{3\sqrt{13}}.", r"\boxed{3\sqrt{13}}"),
        (r"the answer is $\frac{3}{4}$.", r"$\frac{3}{4}$"),
        ("Final Answer: The final answer is $5$. I hope it is correct.", "$5$"),
        ("#### 18\nNote: 3 eggs and 4 muffins", "18"),
        ("#### 1,250", "1250"),
        ("so she pays #### $18", "18"),
        ("The answer is (2, 3).", "$(2, 3)$"),
        (r"The answer is \frac{1}{2}.", r"$\frac{1}{2}$"),
        ("The answer is 12 apples, not 13.", "12"),
        ("The answer is 2.5e-05", "0.000025"),
        (r"<answer>3\sqrt{13}</answer>", r"$3\sqrt{13}$"),
        ("<answer>18 apples</answer>", "18 apples"),
        (r"So we get $x = \frac{10}{9}$.", r"$x = \frac{10}{9}$"),
        (r"so x = \frac{10}{9}", r"$\frac{10}{9}$"),
        (r"so the distance is 3\sqrt{13}", r"$3\sqrt{13}$"),
        ("We have $x = 3$ boxes, and the total is 12.", "12"),
        ("costs $5 and $7 total", "7"),  # currency, not math
        ("3 boxes of 4 apples make 12", "12"),
        ("The answer is:\n\\[\n9\n\\]", "\\[\n9\n\\]"),
        ("I do not know", None),
    ],
)
def test_math_extraction_keeps_the_markup(completion: str, answer: str | None) -> None:
    assert extract_answer(completion, "auto", verifier="math") == answer


def test_math_policies_other_than_auto() -> None:
    text = r"2 + 3 = 5, so \boxed{\frac{10}{2}} <answer>(2, 3)</answer>"
    assert extract_answer(text, "boxed", verifier="math") == r"\boxed{\frac{10}{2}}"
    assert extract_answer(text, "answer_tag", verifier="math") == "$(2, 3)$"
    assert extract_answer(r"x = \frac{10}{9}", "last_number", verifier="math") == "9"  # asked for, so given
    assert extract_answer(text, "full", verifier="math") == text


def test_gold_forms() -> None:
    assert as_math(r"\frac{\pi}{2}") == r"$\frac{\pi}{2}$"
    assert as_math("(2, 3)") == "$(2, 3)$"
    assert as_math("$(2, 3)$") == "$(2, 3)$"
    assert as_math("1,234") == "1,234"
    assert as_math("1e16") == "10000000000000000"
    assert as_math("hello") == "hello"  # prose: math-verify finds nothing, the gold is unusable
    assert exact_decimal(1e16) == "10000000000000000"
    assert exact_decimal(2.5e-05) == "0.000025"
    assert exact_decimal(0.1) == "0.1"
    assert exact_decimal("-3E2") == "-300"


@pytest.mark.parametrize("gold", ["1e16", "1e+16", "10000000000000000"])
def test_scientific_golds_mean_their_value(verifier_pool: VerifierPool, gold: str) -> None:
    right, wrong = verifier_pool.verify_many([VerificationTask("math", gold, "10000000000000000"),
                                              VerificationTask("math", gold, "1")])
    assert (right.passed, wrong.passed) == (True, False)


def test_other_scripts_digits_are_digits_on_every_route(checker, verifier_pool: VerifierPool) -> None:
    assert ascii_digits("\uff14\uff12 \u0664\u0662 4\uff12") == "42 42 42"
    for answer in ("\uff14\uff12", "4\uff12", "\u0664\u0662", "\\boxed{\u0664\u0662}"):
        assert verification.fast_result("math", "42", answer) == (1.0, "ok", "")
        assert checker.run(("verify", "math", "42", answer, "{}")) == (1.0, "ok", "")
    # The same verdict as the reasoning-gym scorer that reads numbers (chain_sum parses with int).
    [entry] = reasoning_gym.create_dataset("chain_sum", seed=5, size=1)
    arabic = "".join(chr(0x660 + int(c)) if c.isdigit() else c for c in entry["answer"])
    metadata = json.dumps(entry["metadata"])
    rg, math = verifier_pool.verify_many([VerificationTask("reasoning_gym", entry["answer"], arabic, metadata),
                                          VerificationTask("math", entry["answer"], arabic)])
    assert rg.passed and math.passed


def test_an_unreadable_math_gold_is_bad_even_wrapped(checker) -> None:
    # `$\frac{$` parses to the string itself: an answer with the same text would match it.
    assert checker.run(("gold", "math", r"\frac{", None, "{}"))[1] == "bad_gold"
    assert checker.run(("gold", "math", r"\frac{\pi}{2}", None, "{}")) == (0.0, "ok", "")
    assert checker.run(("gold", "math", "(2, 3)", None, "{}")) == (0.0, "ok", "")


RG_GENERATORS = ("basic_arithmetic", "chain_sum", "products", "gcd", "leg_counting", "count_bits",
                 "letter_counting", "number_sequence", "word_sorting", "spell_backward")
RG_FORMATS = [
    # (completion template, what the generator's scorer receives)
    ("{a}", "{last}"),
    ("The answer is {a}.", "{last}"),
    ("<answer>{a}</answer>", "{a}"),
    ("<answer> {a} </answer> and then 99", "{a}"),
    ("\\boxed{{{a}}}", "{a}"),
    ("Let me think. 3 + 4 = 7. \\boxed{{{a}}}", "{a}"),
    ("<answer>{a}</answer> \\boxed{{0}}", "{a}"),
    ("#### {a}", "{last}"),
    ("Final Answer: {a}", "{last}"),
    ("I am not sure.", None),
]


@pytest.mark.parametrize("name", RG_GENERATORS)
def test_reasoning_gym_scores_exactly_as_its_generator(verifier_pool: VerifierPool, name: str) -> None:
    """reasoning-gym answers are extracted bare (tag, box content, last number) and scored by the
    generator's own `score_answer`, whatever the math side does."""
    dataset = reasoning_gym.create_dataset(name, seed=17, size=8)
    tasks, expected = [], []
    for entry in dataset:
        for template, received in RG_FORMATS:
            text = template.format(a=entry["answer"])
            answer = extract_answer(text, verifier="reasoning_gym")
            last = extract_answer(text, "last_number", verifier="reasoning_gym")
            want = last if received == "{last}" else received and received.format(a=entry["answer"].strip())
            assert answer == want
            tasks.append(VerificationTask("reasoning_gym", entry["answer"], answer,
                                          json.dumps(entry["metadata"], default=str)))
            expected.append(0.0 if want is None else float(dataset.score_answer(want, entry)))
    assert [v.score for v in verifier_pool.verify_many(tasks)] == expected
