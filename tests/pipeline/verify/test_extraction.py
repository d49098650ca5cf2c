import time

import pytest

from pipeline.verify.extraction import EXTRACTION_POLICIES, extract_answer

RG = "reasoning_gym"
"""reasoning-gym's scorers compare text: they get the bare answer."""


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("<answer> 7 </answer>", "7"),
        ("<answer>1</answer> then <answer>2</answer>", "2"),
        ("no tags here, 12", None),
        ("<answer>unclosed 5", None),
        ("<answer>  </answer>", None),
    ],
)
def test_answer_tag(completion: str, expected: str | None) -> None:
    assert extract_answer(completion, "answer_tag", verifier=RG) == expected


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        (r"so \boxed{42}.", "42"),
        (r"\boxed{1} then \boxed{2}", "2"),
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\boxed{\boxed{3}}", r"\boxed{3}"),
        (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),
        (r"\boxed{4} and \boxed{unclosed", "4"),
        (r"\boxed{unclosed", None),
        ("plain 5", None),
    ],
)
def test_boxed(completion: str, expected: str | None) -> None:
    assert extract_answer(completion, "boxed", verifier=RG) == expected


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("The answer is 12.", "12"),
        ("-9 / 9 = -1", "-1"),
        ("x = \u22125", "-5"),
        ("7-3", "3"),
        ("(-3)", "-3"),
        ("pi is about 3.14", "3.14"),
        ("She has 1,234 apples", "1234"),
        ("total 1,234,567.5 units", "1234567.5"),
        ("1, 2, 3", "3"),
        ("three quarters is 3/4 of it", "3/4"),
        ("no digits at all", None),
        ("", None),
    ],
)
@pytest.mark.parametrize("verifier", [RG, "math"])
def test_last_number(completion: str, expected: str | None, verifier: str) -> None:
    assert extract_answer(completion, "last_number", verifier=verifier) == expected


def test_last_number_ignores_a_number_cut_by_the_scan_window() -> None:
    # The tail window starts inside "123...": a fragment of it must not be reported.
    assert extract_answer("7 " + "1" * 10_000, "last_number", verifier=RG) is None
    assert extract_answer("7 " + "x" * 10_000 + " 8", "last_number", verifier=RG) == "8"


def test_full() -> None:
    assert extract_answer("  The answer is 12.\n", "full", verifier=RG) == "The answer is 12."
    assert extract_answer(" \n ", "full", verifier=RG) is None


def test_auto_for_reasoning_gym_prefers_tag_then_boxed_then_last_number() -> None:
    assert extract_answer(r"<answer>7</answer> \boxed{8} 9", verifier=RG) == "7"
    assert extract_answer(r"\boxed{8} 9", verifier=RG) == "8"
    assert extract_answer("The answer is 12.", verifier=RG) == "12"
    assert extract_answer("I do not know", verifier=RG) is None


def test_unknown_policy_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match="last_number"):
        extract_answer("12", "first_number", verifier=RG)


@pytest.mark.parametrize(
    "completion",
    [
        "9" * 1_000_000,
        "\\boxed{" * 200_000,
        "{" * 1_000_000,
        "-1," * 400_000,
        "1.1." * 300_000,
        "x" * 1_000_000 + "<answer>",
        "<answer>" * 200_000 + "</answer>",
    ],
    ids=["digits", "boxes", "braces", "commas", "dots", "open-tag", "many-tags"],
)
def test_megabyte_inputs_are_fast(completion: str) -> None:
    start = time.perf_counter()
    for policy in EXTRACTION_POLICIES:
        for verifier in (RG, "math"):
            extract_answer(completion, policy, verifier=verifier)
    assert time.perf_counter() - start < 0.5
