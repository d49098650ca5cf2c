"""The hygiene assets through Dagster on a small reasoning-gym pool plus planted local rows
(no engine: these assets never generate)."""

import json

import pyarrow.parquet as pq
import pytest
from dagster import AssetSelection, DagsterInstance, materialize

from assets.definitions import all_assets
from assets.io_manager import ParquetIOManager
from assets.resources import GradusStorage, TargetModel, TransformersEngineResource, Verifier

HYGIENE = AssetSelection.assets("problems", "quarantined_problems", "unique_problems", "duplicate_problems",
                                "evaluation_problems", "contamination")
BENCH = "Weng earns 12 dollars an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. " \
        "How much did she earn?"


@pytest.fixture
def instance(tmp_path):
    with DagsterInstance.ephemeral(tempdir=str(tmp_path / "dagster")) as inst:
        yield inst


def test_hygiene_assets_on_a_small_pool(home, instance, tmp_path):
    local = tmp_path / "local.jsonl"
    rows = [{"problem": BENCH.replace("12", "15"), "answer": "12.5"},  # changed numbers: contaminated
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
    resources = {"io_manager": ParquetIOManager(home=str(home)), "storage": GradusStorage(home=str(home)),
                 "verifier": Verifier(), "target_model": TargetModel(), "engine": TransformersEngineResource()}
    result = materialize(all_assets, selection=HYGIENE, instance=instance, resources=resources, run_config=config)
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
