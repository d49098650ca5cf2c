"""Fault injection through Dagster (issue 11): the asset wiring of the pipeline's guards, on a real
instance and real files. The pipeline-level scenarios are in tests/pipeline/test_faults.py."""

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest
from dagster import (
    AssetKey,
    AssetMaterialization,
    DagsterInstance,
    MetadataValue,
    build_input_context,
    build_output_context,
    materialize,
)
from dagster._core.types.dagster_type import resolve_dagster_type

from assets.hub import hub_curriculum
from assets.io_manager import ParquetIOManager
from assets.main import summary
from assets.resources import GradusStorage, HubPublisher
from pipeline.core.storage import IntegrityError
from pipeline.curriculum.build import CurriculumSpec, build_curriculum
from tests.assets.test_bad_inputs import ingest, resources
from tests.pipeline.curriculum.test_build import pool
from tests.pipeline.test_faults import INJECTED, flip, truncate


@pytest.fixture
def instance(tmp_path):
    with DagsterInstance.ephemeral(tempdir=str(tmp_path / "dagster")) as inst:
        yield inst


def failure_message(result) -> str:
    [failure] = [e for e in result.all_events if e.is_step_failure]
    return failure.step_failure_data.error.to_string()


def test_the_problems_asset_quarantines_the_target_tokenizers_special_tokens(home, instance, tmp_path, tiny_llama):
    path = tmp_path / "rows.jsonl"
    rows = [{"problem": INJECTED, "answer": "4"}, {"problem": "What is 3+3?", "answer": "6"},
            {"problem": "What is 5+5?", "answer": "10<|im_end|>"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = ingest(home, instance, [{"path": str(path)}], tiny_llama.path)
    assert result.success
    quarantined = pq.read_table(home / "assets" / "quarantined_problems.parquet").to_pandas()
    assert quarantined["reason"].tolist() == ["special_token_in_text"] * 2
    problems = pq.read_table(home / "assets" / "problems.parquet").to_pandas()
    assert problems["answer"].tolist() == ["6"]

    escaped = ingest(home, instance, [{"path": str(path), "special_tokens": "escape"}], tiny_llama.path)
    assert escaped.success
    problems = pq.read_table(home / "assets" / "problems.parquet").to_pandas()
    assert len(problems) == 3 and not any("<|im_start|>" in p[-1]["content"] for p in problems["prompt"])


def test_a_prompt_field_no_row_has_fails_the_run_naming_it(home, instance, tmp_path, tiny_llama):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"question": "1+1?", "answer": "2"}) + "\n")
    result = ingest(home, instance, [{"path": str(path), "prompt_field": "no_such_field"}], tiny_llama.path,
                    raise_on_error=False)
    assert not result.success
    message = failure_message(result)
    assert "prompt_field 'no_such_field'" in message and "'question'" in message
    assert not (home / "assets" / "problems.parquet").exists()


@pytest.mark.parametrize("damage", [lambda p: flip(p, p.stat().st_size // 2), truncate])
def test_a_damaged_asset_file_is_an_error_naming_it(home, damage):
    io = ParquetIOManager(storage=GradusStorage(home=str(home)))
    frame = pd.DataFrame({"problem_id": ["a", "b"], "successes": [0, 4], "trials": [8, 8]})
    io.handle_output(build_output_context(asset_key=AssetKey("pass_rates")), frame)
    context = build_input_context(asset_key=AssetKey("pass_rates"), dagster_type=resolve_dagster_type(pd.DataFrame))
    pd.testing.assert_frame_equal(io.load_input(context), frame)
    damage(io.path_for(["pass_rates"]))
    with pytest.raises(IntegrityError, match="pass_rates.parquet.*rematerialize pass_rates"):
        io.load_input(context)


def test_hub_export_refuses_a_curriculum_outside_gradus_home(home, instance, tmp_path):
    outside = tmp_path / "elsewhere" / "curricula" / "c"
    build_curriculum(*pool([(4, 8)]), CurriculumSpec("c"), tmp_path / "elsewhere")
    instance.report_runless_asset_event(
        AssetMaterialization("curriculum", metadata={"path": MetadataValue.path(str(outside))})
    )
    result = materialize([hub_curriculum], instance=instance, resources={**resources(home), "hub": HubPublisher()},
                         raise_on_error=False)
    assert not result.success
    assert "outside GRADUS_HOME" in failure_message(result)
    assert not (home / "hub").exists()


def test_the_run_summary_shows_an_empty_stage(home):
    manifest = build_curriculum(*pool([(7, 8), (1, 8)]), CurriculumSpec("gap"), home,
                                {"model": {"id": "m", "revision": "r"}, "label_key": "m@r/s"})
    text = summary(manifest)
    assert "stage_2:     0 problems" in text and "(empty: no file)" in text
