"""The Parquet IO manager against a real Dagster instance: asset files at the layout's paths, step
outputs under `steps/`, optional inputs that were never materialized handed in as None."""

from typing import Optional

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from dagster import AssetIn, DagsterInstance, Out, asset, graph_asset, materialize, op

from assets.deployment import resources
from pipeline.core.storage import StorageLayout
from pipeline.rollouts.handles import DatasetHandle, read_handle


@asset
def numbers() -> pd.DataFrame:
    return pd.DataFrame({"n": [1, 2, 3]})


@asset
def doubled(numbers: pd.DataFrame) -> pd.DataFrame:
    return numbers.assign(n=numbers["n"] * 2)


@asset(ins={"absent": AssetIn("never_materialized")})
def tolerant(absent: Optional[pd.DataFrame]) -> pd.DataFrame:
    return pd.DataFrame({"got_none": [absent is None]})


@asset(ins={"absent": AssetIn("never_materialized")})
def strict(absent: pd.DataFrame) -> pd.DataFrame:
    return absent


@asset
def never_materialized() -> pd.DataFrame:
    return pd.DataFrame({"x": [1]})


@op(out=Out(pd.DataFrame))
def halves() -> pd.DataFrame:
    return pd.DataFrame({"h": [0.5]})


@op
def total(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(h=frame["h"].sum())


@graph_asset
def summed() -> pd.DataFrame:
    return total(halves())


@asset
def wide() -> pd.DataFrame:
    return pd.DataFrame({"problem_id": ["a", "b"], "prompt": ["long", "longer"]})


@asset(ins={"wide": AssetIn(metadata={"columns": ["problem_id"]})})
def narrow(wide: pa.Table) -> pd.DataFrame:
    return pd.DataFrame({"columns": [",".join(wide.column_names)], "arrow": [isinstance(wide, pa.Table)]})


@asset
def handed() -> DatasetHandle:
    return DatasetHandle("parts", "/data/elsewhere", 16, "model@rev/key")


@asset
def received(handed: DatasetHandle) -> pd.DataFrame:
    return pd.DataFrame({"path": [handed.path], "rows": [handed.rows]})


def run(home, assets, selection=None):
    with DagsterInstance.ephemeral() as instance:
        return materialize(assets, selection=selection, instance=instance, raise_on_error=False,
                           resources=resources({"GRADUS_HOME": str(home)}))


def test_assets_are_parquet_files_at_the_layout_paths(home):
    result = run(home, [numbers, doubled])
    assert result.success
    layout = StorageLayout(str(home))
    assert pq.read_table(layout.asset(["doubled"])).to_pandas()["n"].tolist() == [2, 4, 6]
    [event] = [m for m in result.asset_materializations_for_node("doubled")]
    assert event.metadata["path"].value == str(layout.asset(["doubled"])) and event.metadata["rows"].value == 3


def test_step_outputs_meet_under_steps(home):
    result = run(home, [summed])
    assert result.success
    [step_file] = (home / "steps" / result.run_id).rglob("*.parquet")
    assert pq.read_table(step_file).to_pandas()["h"].tolist() == [0.5]
    assert pq.read_table(StorageLayout(str(home)).asset(["summed"])).to_pandas()["h"].tolist() == [0.5]


def test_an_optional_input_never_materialized_is_none_and_a_required_one_fails(home):
    graph = [never_materialized, tolerant, strict]
    tolerated = run(home, graph, selection=[tolerant])
    assert tolerated.success
    assert pq.read_table(StorageLayout(str(home)).asset(["tolerant"])).to_pandas()["got_none"].tolist() == [True]

    refused = run(home, graph, selection=[strict])
    assert not refused.success
    [failure] = [e for e in refused.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.to_string()
    assert "never_materialized.parquet does not exist: materialize never_materialized first" in message


def test_a_dataset_handle_is_stored_as_json_and_handed_over(home):
    result = run(home, [handed, received])
    assert result.success
    layout = StorageLayout(str(home))
    assert read_handle(layout.handle(["handed"])) == DatasetHandle("parts", "/data/elsewhere", 16, "model@rev/key")
    assert not layout.asset(["handed"]).exists()
    assert pq.read_table(layout.asset(["received"])).to_pandas().to_dict("records") == [
        {"path": "/data/elsewhere", "rows": 16}]


def test_an_input_can_ask_for_some_columns_as_arrow(home):
    assert run(home, [wide, narrow]).success
    frame = pq.read_table(StorageLayout(str(home)).asset(["narrow"])).to_pandas()
    assert frame.to_dict("records") == [{"columns": "problem_id", "arrow": True}]
