"""Bad inputs through Dagster: the corpus in tests/data ingested by the `problems` asset alone, and
config that names a missing dataset or an escaping curriculum failing with a clear error."""

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from dagster import AssetSelection, DagsterInstance, materialize

from assets.deployment import resources as gradus_resources
from assets.jobs import all_assets, probe_assets
from pipeline.core.storage import StorageLayout
from tests.pipeline.ingest.test_bad_inputs import CORPUS, corpus_source_name, expected_reasons

INGEST = AssetSelection.assets("problems", "quarantined_problems")


def resources(home, model_path: str = "") -> dict:
    """Every resource the graph names; the engine and model are never started by these tests."""
    return gradus_resources({"GRADUS_HOME": str(home), "GRADUS_MODEL_PATH": model_path,
                             "GRADUS_ENGINE": "transformers"})


@pytest.fixture
def instance(tmp_path):
    with DagsterInstance.ephemeral(tempdir=str(tmp_path / "dagster")) as inst:
        yield inst


def dataset_config(src) -> dict:
    return {"path": src.path, "prompt_field": src.prompt_field, "answer_field": src.answer_field,
            "id_field": src.id_field}


def ingest(home, instance, datasets, model_path, raise_on_error=True):
    """Materialize the ingest assets; `model_path` gives the tokenizer whose special tokens count."""
    return materialize(
        all_assets + probe_assets,
        selection=INGEST,
        instance=instance,
        resources=resources(home, model_path),
        run_config={"ops": {"problems": {"config": {"generators": [], "datasets": datasets}}}},
        raise_on_error=raise_on_error,
    )


def test_corpus_through_the_problems_asset(home, instance, tiny_llama):
    result = ingest(home, instance, [dataset_config(src) for src in CORPUS], tiny_llama.path)
    assert result.success
    expected = {(corpus_source_name(src), i): r for src in CORPUS
                for i, r in enumerate(expected_reasons(Path(src.path)))}
    bad = {k: r for k, r in expected.items() if r}

    quarantined = pq.read_table(home / "assets" / "quarantined_problems.parquet").to_pandas()
    got = dict(zip(zip(quarantined["source"], quarantined["row_index"]), quarantined["reason"]))
    assert got == bad
    problems = pq.read_table(home / "assets" / "problems.parquet").to_pandas()
    assert len(problems) == len(expected) - len(bad)
    assert not problems["problem_id"].duplicated().any()

    events = {m.asset_key.path[-1]: m.metadata for m in result.asset_materializations_for_node("problems")}
    assert events["problems"]["quarantined"].value == len(bad)
    assert events["quarantined_problems"]["rows"].value == len(bad)
    reasons_md = events["quarantined_problems"]["reasons"].value
    counts = pd.Series(list(bad.values())).value_counts()
    assert all(f"| {reason} | {n} |" in reasons_md for reason, n in counts.items())
    assert all(c.passed for c in result.get_asset_check_evaluations())


def test_missing_dataset_path_fails_the_run_clearly(home, instance, tmp_path, tiny_llama):
    missing = tmp_path / "no_such_file.jsonl"
    result = ingest(home, instance, [{"path": str(missing)}], tiny_llama.path, raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.cause.message
    assert "does not exist" in message and str(missing) in message
    assert not (home / "assets" / "problems.parquet").exists()


@pytest.mark.parametrize("name", ["../escape", "/abs/path", "a/b", "..", ".hidden"])
def test_curriculum_name_cannot_leave_the_curricula_folder(home, instance, tmp_path, name):
    model = tmp_path / "model"  # a folder is enough: labels only record its id and content hash
    model.mkdir()
    (model / "config.json").write_text("{}")
    layout = StorageLayout(str(home))
    problems = pd.DataFrame({"problem_id": ["p0"], "source": ["s"], "prompt": [[{"role": "user", "content": "q"}]],
                             "answer": ["1"], "verifier": ["math"], "category": ["c"], "metadata": ["{}"]})
    labels = pd.DataFrame({"problem_id": ["p0"], "successes": [1], "trials": [2], "pass_rate": [0.5],
                           "ci_low": [0.1], "ci_high": [0.9]})
    layout.asset(["problems"]).parent.mkdir(parents=True)
    for asset in ("problems", "unique_problems"):
        problems.to_parquet(layout.asset([asset]))
    problems[["problem_id"]].to_parquet(layout.asset(["contamination"]))  # checked against no benchmark
    labels.to_parquet(layout.asset(["pass_rates"]))
    before = sorted(p for p in tmp_path.rglob("*") if "dagster" not in p.parts)

    result = materialize(
        all_assets + probe_assets,
        selection=AssetSelection.assets("curriculum"),
        instance=instance,
        resources=resources(home, str(model)),
        run_config={"ops": {"curriculum": {"config": {"name": name}}}},
        raise_on_error=False,
    )
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert "invalid name" in str(failure.step_failure_data.error.to_string())
    after = sorted(p for p in tmp_path.rglob("*") if "dagster" not in p.parts)
    assert after == before


def test_problems_materialize_alone(home, instance, tiny_llama):
    """`dagster asset materialize --select problems`: checking a new dataset needs no other output."""
    gsm8k = {"path": str(Path(__file__).resolve().parents[1] / "data" / "gsm8k_format.jsonl"),
             "prompt_field": "question"}
    result = materialize(
        all_assets + probe_assets,
        selection=AssetSelection.assets("problems"),
        instance=instance,
        resources=resources(home, tiny_llama.path),
        run_config={"ops": {"problems": {"config": {"generators": [], "datasets": [gsm8k]}}}},
    )
    assert result.success
    assert [m.asset_key.path[-1] for m in result.get_asset_materialization_events()] == ["problems"]
    assert [c.passed for c in result.get_asset_check_evaluations()] == [True]
    problems = pq.read_table(home / "assets" / "problems.parquet").to_pandas()
    assert problems["answer"].tolist() == ["54", "252", "1250", "9", "15", "30"]
    assert not (home / "assets" / "quarantined_problems.parquet").exists()
