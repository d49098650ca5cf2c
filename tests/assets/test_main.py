"""The command line: its summary of a manifest, and a whole run that writes where the layout says."""

import numpy as np
import pandas as pd
import yaml

from assets.main import main, summary
from pipeline.core.model import resolve_model
from pipeline.core.records import Problem
from pipeline.core.storage import StorageLayout
from pipeline.curriculum.build import CurriculumSpec, build_curriculum
from pipeline.difficulty.strata import Strata
from pipeline.rollouts.handles import read_handle


def test_summary_lists_every_stage_and_the_excluded_counts(home):
    prompts = [[{"role": "user", "content": f"{i}?"}] for i in range(5)]
    problems = Problem.to_frame([Problem(Problem.make_id(p, str(i)), "s", p, str(i), "math", "c")
                                 for i, p in enumerate(prompts)])
    successes = np.array([4, 3, 1, 0, 2])
    labels = pd.DataFrame({"problem_id": problems["problem_id"], "successes": successes, "trials": 4,
                           "pass_rate": successes / 4, "ci_low": 0.0, "ci_high": 1.0})
    manifest = build_curriculum(problems, labels, CurriculumSpec("s", Strata((1.0, 0.5, 0.0))), home,
                                {"model": {"id": "org/m", "revision": "r1"}, "label_key": "org-m@r1/s-1"})
    text = summary(manifest, {"c": (0.5, 5)}).splitlines()
    assert text[0] == "model org/m @ r1  (org-m@r1/s-1)"
    assert text[1] == "  stage_1:     1 problems, pass rate in (0.50, 1.00], mean 0.75"
    assert text[2] == "  stage_2:     2 problems, pass rate in (0.00, 0.50], mean 0.38"
    assert text[3] == "  excluded: 1 always solved, 1 never solved"
    assert text[-1].split() == ["c", "0.500", "(5", "problems)"]


def test_summary_says_when_the_token_cap_cut_the_rollouts(home):
    prompts = [[{"role": "user", "content": f"{i}?"}] for i in range(2)]
    problems = Problem.to_frame([Problem(Problem.make_id(p, str(i)), "s", p, str(i), "math", "c")
                                 for i, p in enumerate(prompts)])
    labels = pd.DataFrame({"problem_id": problems["problem_id"], "successes": [1, 2], "trials": 4,
                           "truncated": [3, 0], "truncated_failures": [3, 0], "pass_rate": [0.25, 0.5],
                           "ci_low": 0.0, "ci_high": 1.0})
    manifest = build_curriculum(problems, labels, CurriculumSpec("cap"), home,
                                {"model": {"id": "org/m", "revision": "r1"}, "label_key": "k",
                                 "sampling": {"max_tokens": 32}})
    assert "  token cap: 3 of 8 rollouts (38%) stopped at the token cap (max_tokens=32) and count as failures, " \
        "more than 10%; most failures of 1 problem(s) are such cuts. Raise target_model's max_tokens and relabel: these pass " \
        "rates measure the cap, not difficulty" in summary(manifest).splitlines()


def test_main_runs_label_job_into_the_layout(home, tiny_llama, tmp_path, monkeypatch, capfd):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("GRADUS_ENGINE", "transformers")
    monkeypatch.setenv("GRADUS_MODEL_PATH", tiny_llama.path)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "ops": {"problems": {"config": {"generators": [{"name": "chain_sum", "levels": [0], "size_per_level": 2}]}},
                "rollouts": {"config": {"samples_per_problem": 2}},
                "curriculum": {"config": {"name": "cli"}}},
        "resources": {"target_model": {"config": {"model_path": tiny_llama.path, "max_tokens": 4}}},
    }))
    assert main(["--config", str(config)]) == 0
    layout = StorageLayout(str(home))
    out, err = capfd.readouterr()
    assert " - DEBUG - " not in out + err and " - INFO - label_job - " in out + err  # progress, not pages
    assert f"curriculum manifest: {layout.curriculum('cli') / 'manifest.json'}" in out
    model = resolve_model(tiny_llama.path)
    assert f"model {model.model_id} @ {model.revision}" in out
    assert read_handle(layout.handle(["rollouts"])).to_frame()["sample_index"].tolist() == [0, 1, 0, 1]
    assert (layout.dagster / "dagster.yaml").is_file() and any((layout.dagster).iterdir())
