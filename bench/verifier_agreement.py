"""Verifier agreement: gradus's verdicts against the expected ones, today's code beside the code as
it was (commit `--base`, 5cf7892 by default, loaded from git into a temporary module at run time).

Measured:
- per kind of the case table in tests/pipeline/verify/math_cases.py (math-verify-style notation,
  realistic completions, bare-LaTeX golds, digits of other scripts): agreement with the expected
  verdict, lenient verdicts (a wrong answer passed) and strict ones (a right answer failed), each
  through the whole route (`auto` extraction, the fast path, the worker's check);
- reasoning-gym: (problem, completion) pairs in 10 formats over 10 generators, scored through
  gradus and compared with the generator's own `score_answer` on the answer the old code extracted
  (they must not move);
- verdicts per second: plain-number completions on the fast path (extraction included), the worker's
  check done in this process on the case table, and a real `VerifierPool` of 2 workers on
  2000 distinct boxed fractions (new code only).

Timings come from a shared 2-core machine: they are noisy (another agent's job moves them by tens of
percent); compare old and new within one run. Last line: one JSON object.

Run: PYTHONPATH=. .venv/bin/python bench/verifier_agreement.py [--base 5cf7892] [--rg-size 8] [--plain 20000]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from types import ModuleType

import reasoning_gym

from pipeline.verify import verification
from pipeline.verify.extraction import extract_answer
from pipeline.verify.verification import VerificationTask, VerifierPool
from tests.pipeline.verify.math_cases import CASES
from tests.pipeline.verify.test_math_verdicts import RG_FORMATS, RG_GENERATORS

ROOT = Path(__file__).resolve().parents[1]


def old_modules(base: str, folder: Path) -> tuple[ModuleType, ModuleType]:
    """extraction and verification as they were at `base`, importable side by side with today's."""
    sources = {name: subprocess.run(["git", "show", f"{base}:pipeline/verify/{name}.py"], cwd=ROOT, check=True,
                                    capture_output=True, text=True).stdout for name in ("extraction", "verification")}
    sources["verification"] = sources["verification"].replace(
        "from pipeline.verify.extraction import", "from gradus_old_extraction import")
    modules = []
    for name, text in sources.items():
        path = folder / f"gradus_old_{name}.py"
        path.write_text(text)
        spec = importlib.util.spec_from_file_location(f"gradus_old_{name}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        modules.append(module)
    return modules[0], modules[1]


def route(extract, verify_module, checker, verifier: str, gold: str, text: str, metadata: str = "{}") -> float:
    """The score one completion gets through extraction, the fast path, then the worker's check."""
    answer = extract(text)
    if answer is None:
        return 0.0
    fast = verify_module.fast_result(verifier, gold, answer, metadata)
    result = fast if fast is not None else checker.run(("verify", verifier, gold, answer, metadata))
    return result[0] if result[1] == "ok" else 0.0


def case_figures(extract, verify_module, checker) -> dict:
    per_kind: dict[str, Counter] = {}
    for kind, gold, text, expected in CASES:
        passed = route(extract, verify_module, checker, "math", gold, text) >= 1.0
        counts = per_kind.setdefault(kind, Counter())
        counts["cases"] += 1
        counts["agree"] += passed == expected
        counts["lenient"] += passed and not expected
        counts["strict"] += expected and not passed
    return {kind: {"cases": c["cases"], "agreement": round(c["agree"] / c["cases"], 4),
                   "lenient": c["lenient"], "strict": c["strict"]} for kind, c in per_kind.items()}


def reasoning_gym_pairs(size: int) -> list[tuple[str, str, str, dict, object]]:
    pairs = []
    for name in RG_GENERATORS:
        dataset = reasoning_gym.create_dataset(name, seed=23, size=size)
        for entry in dataset:
            for template, _ in RG_FORMATS:
                pairs.append((name, entry["answer"], template.format(a=entry["answer"]), entry, dataset))
    return pairs


def plain_numbers(n: int) -> list[tuple[str, str]]:
    return [(str(i % 97), f"We add them up: {i % 89} + {i % 7} = {i % 89 + i % 7}. The answer is {i % 97}.")
            for i in range(n)]


def rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="5cf7892", help="the commit to compare with")
    parser.add_argument("--rg-size", type=int, default=8, help="problems per reasoning-gym generator")
    parser.add_argument("--plain", type=int, default=20_000, help="plain-number completions timed on the fast path")
    args = parser.parse_args()

    new_checker = verification._Checker(inner_timeout=5, allow_debug=False)
    with tempfile.TemporaryDirectory() as tmp:
        old_extraction, old_verification = old_modules(args.base, Path(tmp))
        old_checker = old_verification._Checker(inner_timeout=5, allow_debug=False)

        def new_math(text: str) -> str | None:
            return extract_answer(text, verifier="math")

        new = case_figures(new_math, verification, new_checker)
        old = case_figures(old_extraction.extract_answer, old_verification, old_checker)
        for label, figures in (("new", new), ("old", old)):
            for kind, f in figures.items():
                print(f"{label} {kind}: {f}", flush=True)

        pairs = reasoning_gym_pairs(args.rg_size)
        rg_same = 0
        for name, gold, text, entry, dataset in pairs:
            metadata = json.dumps(entry["metadata"], default=str)
            got = route(lambda t: extract_answer(t, verifier="reasoning_gym"), verification, new_checker,
                        "reasoning_gym", gold, text, metadata)
            before = old_extraction.extract_answer(text)
            want = 0.0 if before is None else float(dataset.score_answer(before, entry))
            rg_same += got == want
        print(f"reasoning-gym: {rg_same}/{len(pairs)} pairs scored as the generator scores the old extraction",
              flush=True)

        plain = plain_numbers(args.plain)
        speeds = {}
        for label, extract, module in (("new", new_math, verification),
                                       ("old", old_extraction.extract_answer, old_verification)):
            started = time.perf_counter()
            settled = sum(module.fast_result("math", gold, extract(text)) is not None for gold, text in plain)
            speeds[f"fast_path_{label}"] = rate(len(plain), time.perf_counter() - started)
            assert settled == len(plain), f"{label}: {len(plain) - settled} plain numbers missed the fast path"
        for label, extract, checker in (("new", new_math, new_checker),
                                        ("old", old_extraction.extract_answer, old_checker)):
            jobs = [("verify", "math", gold, extract(text), "{}") for _, gold, text, _ in CASES]
            jobs = [job for job in jobs if job[3] is not None]
            rates = []
            for _ in range(2):  # the best of two: the first pass also fills sympy's caches
                started = time.perf_counter()
                for job in jobs:
                    checker.run(job)
                rates.append(rate(len(jobs), time.perf_counter() - started))
            speeds[f"worker_check_{label}"] = max(rates)

    # Distinct answers (a call checks a repeated one once), none of them on the fast path.
    tasks = [VerificationTask("math", str(i % 50), f"\\boxed{{\\frac{{{2 * i}}}{{2}}}}") for i in range(2000)]
    with VerifierPool(workers=2) as pool:
        pool.verify_many(tasks[:8])  # workers started and warm
        started = time.perf_counter()
        pool.verify_many(tasks)
        speeds["pool_2_workers_new"] = rate(len(tasks), time.perf_counter() - started)

    def total(figures: dict, key: str) -> int:
        return sum(f[key] for f in figures.values())

    result = {
        "cases": len(CASES),
        "agreement": {kind: f["agreement"] for kind, f in new.items()},
        "agreement_old": {kind: f["agreement"] for kind, f in old.items()},
        "lenient": total(new, "lenient"),
        "lenient_old": total(old, "lenient"),
        "strict": total(new, "strict"),
        "strict_old": total(old, "strict"),
        "per_kind": new,
        "per_kind_old": old,
        "reasoning_gym_pairs": len(pairs),
        "reasoning_gym_agreement": round(rg_same / len(pairs), 4),
        "verdicts_per_s": speeds,
        "note": "timings on a shared 2-core machine: noisy, compare within one run",
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
