"""Settings are defined once: the Dagster config and resources mirror the library specs exactly, every
field carries a description the launchpad shows, and docs/configuration.md's reference is the definitions'."""

import dataclasses
from collections.abc import Iterator
from itertools import chain

import pandas as pd
import pytest
from dagster import Definitions, SourceAsset, materialize
from dagster._config import ConfigTypeKind

from assets import curriculum, history, labelling, probes, problems
from assets.config import HELP, mirror, spec_config, spec_fields
from assets.definitions import defs
from assets.deployment import ENGINE_RESOURCES, resources
from assets.hub import HubCurriculumConfig
from assets.reference import REFERENCE, config_schemas, markdown, reference_section
from assets.resources import GradusStorage, HubPublisher, StrataResource, TargetModel, Verifier
from pipeline.core.storage import StorageLayout
from pipeline.curriculum.build import CurriculumSpec, read_manifest
from pipeline.difficulty.strata import Strata
from pipeline.engines import ENGINES
from pipeline.engines.base import SamplingConfig
from pipeline.export.hub import ExportSpec, PublishSpec
from pipeline.ingest.sources import DatasetSource, ProblemsSpec, ReasoningGymSource
from pipeline.labels.matrix import CrossModelSelection
from pipeline.labels.pass_rates import TargetSpec
from pipeline.labels.priors import PriorSpec
from pipeline.probes.hidden_states import HiddenStateSpec
from pipeline.probes.probe import PredictionSpec, ProbeConfig
from pipeline.rollouts.allocation import AllocationConfig
from pipeline.verify.verification import VerifierSpec

MIRRORS = [
    (labelling.RolloutsConfig, (AllocationConfig, PriorSpec)),
    (problems.ProblemsConfig, (ProblemsSpec,)),
    (curriculum.CurriculumConfig, (CurriculumSpec, CrossModelSelection)),
    (probes.HiddenStatesConfig, (HiddenStateSpec,)),
    (probes.DifficultyProbeConfig, (ProbeConfig,)),
    (probes.PredictedDifficultyConfig, (PredictionSpec,)),
    (HubCurriculumConfig, (ExportSpec,)),
    (GradusStorage, (StorageLayout,)),
    (TargetModel, (TargetSpec, SamplingConfig)),
    (StrataResource, (Strata,)),
    (Verifier, (VerifierSpec,)),
    (HubPublisher, (PublishSpec,)),
    (mirror(ReasoningGymSource), (ReasoningGymSource,)),
    (mirror(DatasetSource), (DatasetSource,)),
    *[(resource, resource.__specs__) for resource in ENGINE_RESOURCES.values()],
]


def as_config(value):
    """A spec default as configuration data: tuples as lists, nested specs as dicts."""
    if dataclasses.is_dataclass(value):
        return {f.name: as_config(getattr(value, f.name)) for f in spec_fields(type(value))}
    if isinstance(value, (tuple, list)):
        return [as_config(v) for v in value]
    return value


@pytest.mark.parametrize("config, specs", MIRRORS, ids=lambda x: getattr(x, "__name__", ""))
def test_dagster_classes_mirror_their_specs(config, specs):
    expected = {f.name: f for spec in specs for f in spec_fields(spec)}
    own = {name for name in config.model_fields if name not in expected}
    assert own <= {"shards"}, f"{config.__name__} defines {own} outside its spec"
    for name, spec_field in expected.items():
        field = config.model_fields[name]
        assert field.description == spec_field.metadata[HELP]
        if spec_field.default is dataclasses.MISSING:
            assert field.is_required()
        else:
            default = field.default.model_dump() if hasattr(field.default, "model_dump") else field.default
            assert default == as_config(spec_field.default), name


@pytest.mark.parametrize("spec", [
    AllocationConfig, ProblemsSpec, CurriculumSpec, HiddenStateSpec, ProbeConfig, PredictionSpec, ExportSpec,
    StorageLayout, TargetSpec, SamplingConfig, Strata, VerifierSpec, PublishSpec, *ENGINES.values(),
])
def test_default_config_is_the_default_spec(spec):
    config = mirror(spec)()
    assert config.to_spec() == spec(), "config defaults and spec defaults differ"


def test_values_go_back_into_the_spec_as_the_spec_types():
    config = problems.ProblemsConfig(generators=[{"name": "chain_sum", "levels": [2, 3]}],
                                     datasets=[{"path": "x.jsonl", "prompt_field": "q"}], max_prompt_chars=10)
    spec = config.to_spec()
    assert spec == ProblemsSpec((ReasoningGymSource("chain_sum", (2, 3)),), (DatasetSource("x.jsonl", "q"),), 10)
    assert StrataResource(edges=[1.0, 0.5, 0.0]).strata() == Strata((1.0, 0.5, 0.0))
    assert TargetModel(temperature=1.0, max_tokens=7).sampling() == SamplingConfig(temperature=1.0, max_tokens=7)


def test_a_field_in_two_specs_is_refused():
    with pytest.raises(TypeError, match="'seed' is defined by two specs"):
        spec_config(SamplingConfig, ReasoningGymSource)


def described(fields: dict, where: str) -> Iterator[tuple[str, str]]:
    """(dotted name, description) of every field, nested blocks and list items included: the
    launchpad shows each one's description beside it."""
    for name, field in fields.items():
        yield f"{where}.{name}", field.description
        config_type = field.config_type
        while config_type.kind in (ConfigTypeKind.ARRAY, ConfigTypeKind.NONEABLE):
            config_type = config_type.inner_type
        if ConfigTypeKind.has_fields(config_type.kind):
            yield from described(config_type.fields, f"{where}.{name}")


def test_every_config_and_resource_field_has_a_description():
    fields = dict(chain.from_iterable(described(f, where) for where, f in config_schemas(defs)))
    nested = [name for name in fields if name.count(".") > 1]
    assert {"resources: target_model.temperature", "resources: engine (vllm).max_model_len",
            "resources: storage.home", "resources: verifier.timeout_s", "resources: strata.edges"} <= fields.keys()
    assert "ops: problems.generators.size_per_level" in nested
    assert not [name for name, description in fields.items() if not description]


def test_engine_registry_and_engine_resources_agree():
    assert ENGINE_RESOURCES.keys() == ENGINES.keys()
    for kind, resource in ENGINE_RESOURCES.items():
        assert resource().kind == kind and resource.__specs__ == (ENGINES[kind],)
    with pytest.raises(ValueError, match="GRADUS_ENGINE='tgi'"):
        resources({"GRADUS_ENGINE": "tgi"})


def test_one_strata_resource_serves_allocation_curriculum_probes_and_history():
    users = {
        "rollouts.sample_shard": labelling.sample_shard.required_resource_keys,
        "curriculum": curriculum.curriculum.required_resource_keys,
        "predicted_difficulty": probes.predicted_difficulty.required_resource_keys,
        "difficulty_history": history.difficulty_history.required_resource_keys,
    }
    assert {name for name, keys in users.items() if "strata" in keys} == set(users)
    no_strata_config = [where for where, fields in config_schemas(defs) if "strata" in fields]
    assert no_strata_config == []


def test_resources_factory_reads_the_environment_it_is_given(tmp_path):
    built = resources({"GRADUS_HOME": str(tmp_path), "GRADUS_ENGINE": "transformers",
                       "GRADUS_MODEL_PATH": "/m", "GRADUS_CHECKPOINT_DIR": str(tmp_path / "ck"),
                       "GRADUS_HUB_REPO": "me/x"})
    assert built["storage"].layout() == StorageLayout(str(tmp_path), str(tmp_path / "ck"))
    assert built["io_manager"].storage is built["storage"]
    assert built["engine"].kind == "transformers" and built["target_model"].model_path == "/m"
    assert built["hub"].repo_id == "me/x" and built["hub"].token is None
    replaced = resources({"GRADUS_HOME": str(tmp_path)}, storage=GradusStorage(home=str(tmp_path / "other")))
    assert replaced["io_manager"].storage.home == str(tmp_path / "other")
    with pytest.raises(KeyError, match="no resource named"):
        resources({}, engines=None)


def test_configuration_reference_is_generated_from_the_definitions(monkeypatch):
    monkeypatch.delenv("GRADUS_HOME", raising=False)
    monkeypatch.delenv("GRADUS_MODEL_PATH", raising=False)
    monkeypatch.delenv("GRADUS_HUB_REPO", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    plain = Definitions(assets=list(defs.assets), resources=resources({}))
    assert reference_section(REFERENCE.read_text()) == markdown(plain), \
        "docs/configuration.md's reference is stale: run `python -m assets.reference --write`"


def test_a_strata_setting_reaches_the_curriculum(home, tmp_path):
    """Setting the strata once moves the curriculum's bins (the other users read the same resource)."""
    layout = StorageLayout(str(home))
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    ids = ["a", "b"]
    layout.asset(["problems"]).parent.mkdir(parents=True)
    pd.DataFrame({"problem_id": ids, "source": "s", "prompt": [[{"role": "user", "content": "q"}]] * 2,
                  "answer": "1", "verifier": "math", "category": "c", "metadata": "{}"}).to_parquet(
        layout.asset(["problems"]))
    pd.read_parquet(layout.asset(["problems"])).to_parquet(layout.asset(["unique_problems"]))
    pd.DataFrame({"problem_id": ids}).to_parquet(layout.asset(["contamination"]))  # checked against no benchmark
    pd.DataFrame({"problem_id": ids, "successes": [1, 3], "trials": [4, 4], "pass_rate": [0.25, 0.75],
                  "ci_low": 0.0, "ci_high": 1.0}).to_parquet(layout.asset(["pass_rates"]))
    strata = StrataResource(edges=[1.0, 0.5, 0.0])
    result = materialize(
        [SourceAsset("unique_problems"), SourceAsset("contamination"), SourceAsset("pass_rates"),
         SourceAsset("predicted_difficulty"), curriculum.curriculum],
        resources=resources({"GRADUS_HOME": str(home), "GRADUS_MODEL_PATH": str(model)}, strata=strata),
    )
    assert result.success
    manifest = read_manifest(layout.curriculum(CurriculumSpec.name))
    assert manifest["strata"]["edges"] == [1.0, 0.5, 0.0]
    assert [s["rows"] for s in manifest["stages"]] == [1, 1]
