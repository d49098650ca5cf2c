"""A real curriculum for the reward tests: reasoning-gym problems from four generators and a local
math file, labelled with made-up counts (every problem in a stage), built as the asset builds it."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.core.records import Problem
from pipeline.curriculum.build import CurriculumSpec, build_curriculum
from pipeline.curriculum.informative import GroupFilter
from pipeline.ingest.sources import DatasetSource, ReasoningGymSource, load_problems
from pipeline.verify.verification import VERIFIER_VERSION

MATH_ROWS = [("What is 6 * 7?", "42"), ("What is 3/4 as a fraction?", "\\frac{3}{4}"), ("Halve 5.", "2.5"),
             ("What is 10 - 23?", "-13"), ("Add 1,000 and 234.", "1234")]
WRONG = "-987654321"
"""An answer no problem here has."""


@pytest.fixture(scope="session")
def reward_curriculum(tmp_path_factory: pytest.TempPathFactory, verifier_pool) -> Path:
    """The curriculum folder (`<home>/curricula/rewards`)."""
    home = tmp_path_factory.mktemp("rewards")
    source = home / "math.jsonl"
    source.write_text("".join(json.dumps({"problem": q, "answer": a}) + "\n" for q, a in MATH_ROWS))
    made = load_problems(
        [ReasoningGymSource(name, (0,), 3) for name in ("products", "chain_sum", "basic_arithmetic", "gcd")],
        [DatasetSource(str(source))], pool=verifier_pool)
    assert not made.quarantined
    problems = Problem.to_frame(made.problems)
    # Pass rates 1/4, 2/4, 3/4 in turn: every problem lands in a stage.
    successes = np.arange(len(problems)) % 3 + 1
    labels = pd.DataFrame({"problem_id": problems["problem_id"], "successes": successes, "trials": 4,
                           "pass_rate": successes / 4, "ci_low": 0.1, "ci_high": 0.9})
    provenance = {"extraction_policy": "auto", "verifier_version": VERIFIER_VERSION, "sampling": {"max_tokens": 96}}
    build_curriculum(problems, labels, CurriculumSpec("rewards"), home, provenance, GroupFilter(8, 4))
    return home / "curricula" / "rewards"


def stage_rows(folder: Path) -> list[dict]:
    """Every staged row, stage by stage."""
    manifest = json.loads((folder / "manifest.json").read_text())
    return [row for s in manifest["stages"] if s["file"] for row in pq.read_table(folder / s["file"]).to_pylist()]
