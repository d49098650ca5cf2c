import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from importlib.metadata import version

import pytest
import reasoning_gym

from pipeline.verify import verification
from pipeline.verify.verification import (
    VERIFIER_VERSION,
    Verdict,
    VerificationTask,
    VerifierPool,
)

TIMEOUT_S = 2.0
# Generous: the 2-core CI machine may be busy, and a kill plus a fork takes a moment.
MARGIN_S = 5.0


def _sleep_task(seconds: float = 60.0) -> VerificationTask:
    return VerificationTask("debug_sleep", "1", "1", json.dumps({"seconds": seconds}))


@pytest.fixture(scope="module")
def pool() -> Iterator[VerifierPool]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(verification, "_DEBUG_ENABLED", True)
        with VerifierPool(workers=2, timeout_s=TIMEOUT_S) as shared:
            yield shared


@pytest.fixture(scope="module")
def arithmetic() -> list[dict]:
    return list(
        reasoning_gym.create_dataset(
            "basic_arithmetic", seed=3, size=2, min_terms=2, max_terms=2, min_digits=1, max_digits=1
        )
    )


def test_version_names_the_installed_libraries() -> None:
    assert VERIFIER_VERSION.startswith("gradus-verify/")
    assert f"math-verify={version('math-verify')}" in VERIFIER_VERSION
    assert f"reasoning-gym={version('reasoning-gym')}" in VERIFIER_VERSION


def test_math(pool: VerifierPool) -> None:
    cases = [
        ("12", "12", True),
        ("1/2", "0.5", True),
        ("0.5", "1/2", True),
        ("12", "13", False),
        ("7", "<answer>7</answer>", True),
        ("12", "The answer is 12.", True),
        ("12", "no number here", False),
    ]
    verdicts = pool.verify_many([VerificationTask("math", gold, answer) for gold, answer, _ in cases])
    assert [v.passed for v in verdicts] == [expected for _, _, expected in cases]
    assert all(v.status == "ok" for v in verdicts)
    assert [v.score for v in verdicts] == [1.0 if expected else 0.0 for _, _, expected in cases]


def test_missing_answer(pool: VerifierPool) -> None:
    assert pool.verify_many([VerificationTask("math", "12", None)]) == [Verdict(0.0, False, "no_answer")]


@pytest.mark.parametrize("gold", ["", "  ", r"\frac{", "hello"])
def test_unparseable_math_gold_never_passes(pool: VerifierPool, gold: str) -> None:
    # The answer equals the gold string: a naive comparison would pass it.
    [verdict] = pool.verify_many([VerificationTask("math", gold, gold)])
    assert verdict.status == "bad_gold"
    assert not verdict.passed and verdict.score == 0.0


def test_empty_reasoning_gym_gold_never_passes(pool: VerifierPool) -> None:
    metadata = json.dumps({"source_dataset": "basic_arithmetic"})
    [verdict] = pool.verify_many([VerificationTask("reasoning_gym", " ", " ", metadata)])
    assert verdict == Verdict(0.0, False, "bad_gold", "empty gold answer")


def test_reasoning_gym_with_a_generated_entry(pool: VerifierPool, arithmetic: list[dict]) -> None:
    entry = arithmetic[0]
    metadata = json.dumps(entry["metadata"])
    right, wrong, partial = pool.verify_many(
        [
            VerificationTask("reasoning_gym", entry["answer"], entry["answer"], metadata),
            VerificationTask("reasoning_gym", entry["answer"], "12345", metadata),
            # basic_arithmetic gives partial credit when the answer is buried in extra text.
            VerificationTask("reasoning_gym", entry["answer"], entry["answer"] + " x", metadata),
        ]
    )
    assert right == Verdict(1.0, True, "ok")
    assert not wrong.passed and wrong.score == 0.0
    assert 0.0 < partial.score < 1.0 and not partial.passed and partial.status == "ok"


def test_reasoning_gym_unknown_dataset_is_an_error(pool: VerifierPool) -> None:
    [verdict] = pool.verify_many(
        [VerificationTask("reasoning_gym", "1", "1", json.dumps({"source_dataset": "no_such_dataset"}))]
    )
    assert verdict.status == "error" and not verdict.passed


def test_unknown_verifier_raises(pool: VerifierPool) -> None:
    with pytest.raises(ValueError, match="reasoning_gym"):
        pool.verify_many([VerificationTask("chess", "e4", "e4")])


def test_hanging_and_huge_answers_finish_and_score_zero(pool: VerifierPool) -> None:
    tasks = [
        VerificationTask("math", "12", "10**10**10**10"),
        VerificationTask("math", "12", "\\frac{" * 5000),
        VerificationTask("math", "12", "9" * 1_000_000),
        _sleep_task(),
    ]
    start = time.monotonic()
    verdicts = pool.verify_many(tasks)
    assert time.monotonic() - start < 2 * TIMEOUT_S + MARGIN_S
    assert all(v.score == 0.0 and not v.passed for v in verdicts)
    assert verdicts[0].status == "timeout"  # math-verify's own alarm, inside the worker
    assert verdicts[3] == Verdict(0.0, False, "timeout", f"killed after {TIMEOUT_S:g}s")
    assert "truncated" in verdicts[2].detail


def test_a_timeout_costs_only_the_offending_task(pool: VerifierPool) -> None:
    # 40 tasks over 2 workers go out in chunks of 5: the sleeper sits mid-chunk.
    tasks = [VerificationTask("math", str(i), f"\\frac{{{2 * i}}}{{2}}") for i in range(40)]  # not the fast path
    tasks[2] = _sleep_task()
    start = time.monotonic()
    verdicts = pool.verify_many(tasks)
    assert time.monotonic() - start < TIMEOUT_S + MARGIN_S
    assert verdicts[2].status == "timeout"
    assert all(v == Verdict(1.0, True, "ok") for i, v in enumerate(verdicts) if i != 2)


def test_pool_recovers_after_workers_are_killed_externally(pool: VerifierPool) -> None:
    old = pool.worker_pids
    for pid in old:
        os.kill(pid, signal.SIGKILL)
    # A chunk sent in the instant a worker dies is blamed for the death; let the deaths land.
    time.sleep(0.5)
    verdicts = pool.verify_many([VerificationTask("math", "12", f"\\frac{{{12 * k}}}{{{k}}}") for k in (2, 3, 4, 5)])
    assert all(v.passed for v in verdicts)
    assert set(pool.worker_pids).isdisjoint(old)


def test_a_worker_killed_mid_task_fails_only_that_task() -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(verification, "_DEBUG_ENABLED", True)
        single = VerifierPool(workers=1, timeout_s=20.0)
    with single:
        first_done = threading.Event()
        tasks = [VerificationTask("math", "1", "\\frac{2}{2}"), _sleep_task(), VerificationTask("math", "2", "\\frac{4}{2}")]
        results: list[list[Verdict]] = []

        def progress(done: int, total: int) -> None:
            if done >= 1:
                first_done.set()

        runner = threading.Thread(target=lambda: results.append(single.verify_many(tasks, progress)))
        start = time.monotonic()
        runner.start()
        assert first_done.wait(30)
        time.sleep(0.5)  # let the sleeper reach the worker
        os.kill(single.worker_pids[0], signal.SIGKILL)
        runner.join(30)
        assert time.monotonic() - start < 20  # killed, not timed out
    [verdicts] = results
    assert verdicts[0].passed and verdicts[2].passed
    assert verdicts[1].status == "error" and not verdicts[1].passed


def test_verify_many_from_a_worker_thread(pool: VerifierPool) -> None:
    results: list[list[Verdict]] = []
    runner = threading.Thread(
        target=lambda: results.append(pool.verify_many([VerificationTask("math", "1/2", "0.5")]))
    )
    runner.start()
    runner.join(30)
    assert results == [[Verdict(1.0, True, "ok")]]


def test_results_keep_input_order_and_progress_reaches_total(pool: VerifierPool) -> None:
    # Distinct answers that are not plain numbers: every one goes to a worker.
    tasks = [VerificationTask("math", str(i % 7), f"\\frac{{{2 * i}}}{{2}}") for i in range(2000)]
    reports: list[tuple[int, int]] = []
    start = time.monotonic()
    verdicts = pool.verify_many(tasks, progress=lambda done, total: reports.append((done, total)))
    assert time.monotonic() - start < 20  # a few seconds on 2 cores; minutes would mean no batching
    assert [v.passed for v in verdicts] == [i < 7 for i in range(2000)]
    assert reports[-1] == (2000, 2000)
    assert [done for done, _ in reports] == sorted(done for done, _ in reports)


def test_gold_problems(pool: VerifierPool, arithmetic: list[dict]) -> None:
    metadata = json.dumps(arithmetic[0]["metadata"])
    problems = pool.gold_problems(
        [
            VerificationTask("math", "12", None),
            VerificationTask("math", "", None),
            VerificationTask("math", r"\frac{", None),
            VerificationTask("reasoning_gym", arithmetic[0]["answer"], None, metadata),
            VerificationTask("reasoning_gym", "1", None, json.dumps({"source_dataset": "no_such_dataset"})),
            VerificationTask("chess", "e4", None),  # ingest quarantines it rather than crash
        ]
    )
    assert problems[0] is None and problems[3] is None
    assert all(isinstance(p, str) and p for p in problems[1:3] + problems[4:])
    assert problems[5] == "unknown verifier 'chess'"


def test_gold_problems_one_at_a_time(pool: VerifierPool) -> None:
    def gold_problem(verifier: str, gold: str, metadata: str = "{}") -> str | None:
        return pool.gold_problems([VerificationTask(verifier, gold, None, metadata)])[0]

    assert gold_problem("math", "7") is None
    assert gold_problem("math", "") == "empty gold answer"
    assert gold_problem("math", r"\frac{") is not None
    assert "no_such_dataset" in (gold_problem("reasoning_gym", "1", '{"source_dataset": "no_such_dataset"}') or "")


def test_closed_pool_refuses_work() -> None:
    closed = VerifierPool()
    closed.close()
    with pytest.raises(RuntimeError, match="closed"):
        closed.verify_many([VerificationTask("math", "1", "1")])


BIG = "12345678901234567890"
MATH_CASES = [
    ("5", "5"), ("5", "5.0"), ("5", "5.00"), ("5", "05"), ("5", "007"), ("7", "007"), ("-7", "-007"), ("0", "-0.0"), ("5", "0005.0"),
    ("0", "-0"), ("-0", "0"), ("-3", "-3"), ("-3", "3"), ("1000", "1e3"), ("1000", "1,000"),
    ("1234567", "1,234,567"), ("1000", "1,00"), ("0.5", "1/2"), ("1/2", "0.5"), ("3", "3."), ("3.0", "3"),
    ("12", "12.0"), ("5", " 5 "), ("5", "+5"), ("-5", "- 5"), ("10", "10%"), ("2.5", "2.50"),
    ("4", "4.0000001"), (BIG, BIG), (BIG, BIG[:-1] + "1"), ("123456789012345", "123456789012346"),
    (BIG, BIG + ".0"), ("1000000000000", "1000000000000.0"), ("42", "\\boxed{42}"), ("", "5"),
]


@pytest.fixture(scope="module")
def checker() -> verification._Checker:
    """The worker's own checks, run here (main thread: math-verify's alarms work)."""
    return verification._Checker(inner_timeout=5, allow_debug=False)


@pytest.mark.parametrize(("gold", "answer"), MATH_CASES)
def test_the_math_fast_path_agrees_with_math_verify(checker, gold: str, answer: str) -> None:
    fast = verification.fast_result("math", gold, answer)
    if fast is not None:
        assert fast == checker.run(("verify", "math", gold, answer, "{}"))


def test_the_fast_path_settles_plain_numbers_only() -> None:
    settled = {(g, a) for g, a in MATH_CASES if verification.fast_result("math", g, a) is not None}
    assert {("5", "5.0"), ("3", "3."), ("0", "-0"), ("1000", "1,000"), (BIG, BIG), (BIG, BIG[:-1] + "1")} <= settled
    assert not settled & {("1000", "1e3"), ("-7", "-007"), ("0.5", "1/2"), ("5", "+5"), ("10", "10%"), (BIG, BIG + ".0"), ("", "5")}


@pytest.mark.parametrize("name", sorted(verification._RG_EXACT))
def test_reasoning_gym_fast_path_passes_only_what_the_generator_scores_1(checker, name: str) -> None:
    for entry in reasoning_gym.create_dataset(name, size=8, seed=11):
        metadata = json.dumps(entry["metadata"])
        assert verification.fast_result("reasoning_gym", entry["answer"], entry["answer"], metadata) == (1.0, "ok", "")
        assert checker.run(("verify", "reasoning_gym", entry["answer"], entry["answer"], metadata))[0] == 1.0
        # A near miss (partial credit) is the generator's to score.
        assert verification.fast_result("reasoning_gym", entry["answer"], entry["answer"] + " ", metadata) is None


def test_reasoning_gym_gold_outside_the_list_goes_to_its_scorer(checker) -> None:
    [entry] = reasoning_gym.create_dataset("rearc", size=1, seed=1)
    metadata = json.dumps(entry["metadata"], default=str)
    assert verification.fast_result("reasoning_gym", entry["answer"], entry["answer"], metadata) is None


def test_repeated_answers_are_verified_once(pool: VerifierPool) -> None:
    before = pool.stats.copy()
    task = VerificationTask("math", "3", "\\frac{9}{3}")
    first = pool.verify_many([task, task, VerificationTask("math", "3", " \\frac{9}{3} ")])
    again = pool.verify_many([task])
    assert [v.passed for v in first + again] == [True] * 4
    assert pool.stats["worker"] - before["worker"] == 1
    assert pool.stats["memo"] - before["memo"] == 3


def test_workers_default_to_the_available_cores() -> None:
    assert verification.VerifierSpec().workers == 0
    with VerifierPool() as sized:
        assert len(sized.worker_pids) == verification.available_cores() == len(os.sched_getaffinity(0))
