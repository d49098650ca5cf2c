"""verl's own loader, dataset and sampler against a gradus curriculum, in the venv that
scripts/install_verl.sh makes (verl 0.9.1; its torch and transformers differ from gradus's), with
this checkout on PYTHONPATH: the way a verl job finds gradus once it is installed there."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.rewards import trainers
from tests.pipeline.rewards.conftest import WRONG, stage_rows

REPO = Path(__file__).resolve().parents[3]
VENV = Path(os.environ.get("GRADUS_VERL_VENV", REPO / ".venv-verl"))
PYTHON = VENV / "bin" / "python"

pytestmark = pytest.mark.skipif(
    not PYTHON.exists(), reason=f"no verl venv at {VENV}: run scripts/install_verl.sh (or set GRADUS_VERL_VENV)")


def test_verl_loads_the_reward_and_scores_every_row_of_the_stages_in_order(reward_curriculum, smollm2, tmp_path):
    wrong = tmp_path / "wrong.json"
    rows = stage_rows(reward_curriculum)
    wrong.write_text(json.dumps({r["problem_id"]: WRONG for r in rows}))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([str(PYTHON), str(Path(__file__).with_name("verl_side.py")),
                           str(reward_curriculum / "manifest.json"), smollm2.path, str(wrong), trainers.__file__],
                          capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    # data.shuffle=False reads data.train_files as listed: stage 1's rows first, each stage in file order.
    assert got["order"] == [r["problem_id"] for r in rows]
    assert list(got["gold"]) == ["pkg://pipeline.rewards.trainers", trainers.__file__]
    for path in got["gold"]:
        assert got["gold"][path] == [1.0] * len(rows) and got["wrong"][path] == [0.0] * len(rows)
    # Without gradus's reward verl cannot score a single row: its router knows none of these sources.
    assert got["default_router_refuses"] == sorted({r["data_source"] for r in rows})
    assert got["raw_prompt"] == list(rows[0]["prompt"])
    assert got["dagster_imported"] is False
    assert got["reward_module"] == trainers.__file__
