"""The hygiene assets through Dagster on a small reasoning-gym pool plus planted local rows, and the
curriculum's exclusion of contaminated problems with its blocking check (no engine: these assets
never generate, and pass rates are planted)."""

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest
from dagster import AssetCheckSeverity, AssetSelection, DagsterInstance, SourceAsset, materialize

from assets.curriculum import curriculum
from assets.definitions import all_assets, probe_assets
from assets.deployment import resources as gradus_resources
from assets.hub import hub_curriculum
from assets.hygiene import contamination, evaluation_problems, unique_problems
from assets.resources import HubPublisher
from pipeline.core.model import ModelSpec, write_marker
from pipeline.core.records import Problem
from pipeline.core.storage import StorageLayout
from pipeline.curriculum.build import curriculum_problem_ids, read_manifest
from pipeline.engines.base import SamplingConfig
from pipeline.labels.pass_rates import LabelTarget, pass_rates
from pipeline.verify.verification import VERIFIER_VERSION

HYGIENE = AssetSelection.assets("problems", "quarantined_problems", "unique_problems", "duplicate_problems",
                                "evaluation_problems", "contamination")
BENCH = "Weng earns 12 dollars an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. " \
        "How much did she earn?"
LEAKED = BENCH.replace("12", "15")


@pytest.fixture
def instance(tmp_path):
    with DagsterInstance.ephemeral(tempdir=str(tmp_path / "dagster")) as inst:
        yield inst


def test_hygiene_assets_on_a_small_pool(home, instance, tmp_path):
    local = tmp_path / "local.jsonl"
    rows = [{"problem": LEAKED, "answer": "12.5"},  # changed numbers: contaminated
            {"problem": "Compute 17 * 3.", "answer": "51"},
            {"problem": "compute  17*3.", "answer": "52"}]  # conflicting answers
    local.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"problem": BENCH, "answer": "10"}) + "\n")
    config = {"ops": {
        "problems": {"config": {"generators": [{"name": "chain_sum", "levels": [0, 1], "size_per_level": 3}],
                                "datasets": [{"path": str(local)}]}},
        "evaluation_problems": {"config": {"benchmarks": [
            {"name": "heldout", "generators": [{"name": "chain_sum", "levels": [0, 1], "size_per_level": 3,
                                                "seed": 999}]},
            {"name": "mini", "path": str(bench)}]}},
    }}
    resources = gradus_resources({"GRADUS_HOME": str(home), "GRADUS_ENGINE": "transformers"})
    result = materialize(all_assets + probe_assets, selection=HYGIENE, instance=instance, resources=resources, run_config=config)
    assert result.success

    read = lambda name: pq.read_table(home / "assets" / f"{name}.parquet").to_pandas()  # noqa: E731
    problems, unique, dropped, report = read("problems"), read("unique_problems"), read("duplicate_problems"), \
        read("contamination")
    assert len(problems) == 9
    assert dropped["reason"].tolist() == ["conflicting_answers"] * 2
    assert len(unique) == 7 and set(report["problem_id"]) == set(unique["problem_id"])
    assert {"heldout/exact", "heldout/open_r1", "heldout/datatrove", "mini/datatrove", "mini/minhash"} <= set(report)
    changed = unique["prompt"].map(lambda m: m[-1]["content"]).str.startswith("Weng")
    flagged_row = report[report["problem_id"] == unique["problem_id"][changed].item()].iloc[0]
    assert flagged_row["mini/datatrove"] and not flagged_row["mini/exact"]

    [event] = result.asset_materializations_for_node("contamination")
    assert "| mini |" in event.metadata["per_benchmark_and_method"].value
    assert "Weng earns 15" in event.metadata["flagged_pairs"].value
    assert "Weng earns 12" in event.metadata["flagged_pairs"].value


@pytest.fixture
def labelled(home, tmp_path):
    """A model folder with a recorded id, and stored problems and pass rates: six unrelated problems
    and a changed-number copy of the benchmark problem, each with a pass rate between 0 and 1 (no
    engine: rollouts are not what this tests)."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    write_marker(model, "org/tiny", "r1")
    target = LabelTarget(ModelSpec(str(model), "org/tiny", "r1"), SamplingConfig(), VERIFIER_VERSION)
    texts = [(f"A shop sells {i} kinds of {fruit}. How many kinds are left after {i - 1} sell out?", "1")
             for i, fruit in zip(range(2, 8), ["apples", "pears", "plums", "figs", "limes", "dates"])]
    texts.append((LEAKED, "12.5"))
    problems = Problem.to_frame([
        Problem(Problem.make_id([{"role": "user", "content": t}], a), "dataset/local", [{"role": "user", "content": t}],
                a, "math", "local") for t, a in texts])
    rewards = pd.DataFrame([(pid, k < 2) for pid in problems["problem_id"] for k in range(4)],
                           columns=["problem_id", "passed"])
    layout = StorageLayout(str(home))
    for name, frame in (("problems", problems), ("pass_rates", pass_rates(rewards, target))):
        path = layout.asset([name])
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(path)
    return model, problems["problem_id"].iloc[-1]


def curriculum_run(home, model, instance, tmp_path, exclude: bool):
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"problem": BENCH, "answer": "10"}) + "\n")
    assets = [SourceAsset("problems"), SourceAsset("pass_rates"), SourceAsset("predicted_difficulty"), unique_problems,
              evaluation_problems, contamination, curriculum, hub_curriculum]
    resources = gradus_resources({"GRADUS_HOME": str(home), "GRADUS_MODEL_PATH": str(model)},
                                 hub=HubPublisher(repo_id="me/cur"))
    config = {"ops": {"evaluation_problems": {"config": {"benchmarks": [{"name": "mini", "path": str(bench)}]}},
                      "curriculum": {"config": {"name": "nightly", "exclude_contaminated": exclude}}}}
    return materialize(assets, instance=instance, resources=resources, run_config=config, raise_on_error=False)


def test_curriculum_leaves_out_a_contaminated_problem_and_the_check_passes(home, labelled, instance, tmp_path):
    model, leaked_id = labelled
    result = curriculum_run(home, model, instance, tmp_path, exclude=True)
    assert result.success
    folder = home / "curricula" / "nightly"
    staged = curriculum_problem_ids(folder)
    assert len(staged) == 6 and leaked_id not in staged
    check = {c.check_name: c for c in result.get_asset_check_evaluations()}["curriculum_is_decontaminated"]
    assert check.passed
    assert read_manifest(folder)["decontamination"]["flagged"] == 1
    assert result.asset_materializations_for_node("hub_curriculum")


def test_a_curriculum_that_keeps_a_contaminated_problem_is_blocked(home, labelled, instance, tmp_path):
    model, leaked_id = labelled
    result = curriculum_run(home, model, instance, tmp_path, exclude=False)
    assert not result.success
    assert leaked_id in curriculum_problem_ids(home / "curricula" / "nightly")
    check = {c.check_name: c for c in result.get_asset_check_evaluations()}["curriculum_is_decontaminated"]
    assert not check.passed and check.severity == AssetCheckSeverity.ERROR
    assert check.metadata["flagged_in_stages"].value == 1
    assert not result.asset_materializations_for_node("hub_curriculum")  # the blocking check stopped it
