"""What a person sees in the UI: pictures named and listed first, figures rounded, and the slow
first steps of a run (model conversion, engine start-up) reported in the step's own log."""

import math

import pandas as pd
import pytest
from dagster import DagsterInstance, materialize

from assets.deployment import resources
from assets.jobs import all_assets, probe_assets
from assets.metadata import figure, picture_key, preview
from assets.resources import TargetModel, TransformersEngineResource

LABELLING = ["problems", "quarantined_problems", "unique_problems", "duplicate_problems", "rollouts",
             "rollout_allocation", "rewards", "pass_rates"]


def test_figures_are_rounded_and_undefined_ones_are_empty():
    assert figure(0.09027777777777778) == 0.09
    assert figure(2 / 3) == 0.667
    assert figure(float("nan")) is None and figure(math.inf) is None and figure(None) is None


def test_previews_show_rounded_figures():
    table = preview(pd.DataFrame({"pass_rate": [0.09027777777777778, float("nan")], "problem_id": ["a", "b"]})).value
    assert table.splitlines()[2:] == ["| 0.09        | a            |", "|             | b            |"]


def test_engine_start_is_reported_in_the_step_log_and_the_histogram_comes_first(home, tiny_llama):
    deployed = resources({"GRADUS_HOME": str(home)}, engine=TransformersEngineResource(batch_size=8),
                         target_model=TargetModel(model_path=tiny_llama.path, max_tokens=4))
    config = {"ops": {"problems": {"config": {"generators": [{"name": "chain_sum", "levels": [0], "size_per_level": 3}]}},
                      "rollouts": {"config": {"samples_per_problem": 2}}}}
    with DagsterInstance.ephemeral() as instance:
        result = materialize(all_assets + probe_assets, selection=LABELLING, resources=deployed, instance=instance,
                             run_config=config)
        assert result.success
        logs = [(e.step_key, e.user_message) for e in instance.all_logs(result.run_id)]
    sampling = [message for step, message in logs if step == "rollouts.sample_shard[0]"]
    starting = next(i for i, m in enumerate(sampling) if m.startswith("loading ") and "into transformers" in m)
    ready = next(i for i, m in enumerate(sampling) if m.startswith("transformers engine ready in "))
    assert starting < ready
    [event] = [m for m in result.asset_materializations_for_node("pass_rates")]
    keys = list(event.metadata)
    assert keys[0] == picture_key("pass-rate histogram per category")
    assert event.metadata[keys[0]].value.startswith("![pass-rate histogram per category](data:image/png;base64,")
    rate = event.metadata["mean_pass_rate"].value
    assert rate == round(rate, 3)


@pytest.mark.parametrize("title", ["pass-rate histogram per category", "train reward per stage"])
def test_a_picture_key_says_it_is_a_picture(title):
    assert picture_key(title).endswith(f"{title} (picture)")
