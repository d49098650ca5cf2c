"""A saved probe read under a new target: found only where it passed its floor, was fitted for
another label key and fits the new model's layers and width, and predicting from that model's own
hidden states."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.core.model import ModelSpec
from pipeline.probes.hidden_states import HiddenStateExtractor
from pipeline.probes.persistence import save_probe
from pipeline.probes.probe import ProbeReport, predict, probe_passes
from pipeline.probes.transfer import transferable_probe
from tests.pipeline.probes.planted import fitted

N, LAYERS = 120, (1, 2)


@pytest.fixture(scope="module")
def pool(tiny_llama: ModelSpec) -> tuple[pd.DataFrame, np.ndarray]:
    prompts = [[{"role": "user", "content": f"What is {i} + {3 * i % 17}? Think of {i % 5} apples."}]
               for i in range(N)]
    frame = pd.DataFrame({"problem_id": [f"p{i}" for i in range(N)], "prompt": prompts})
    return frame, HiddenStateExtractor(tiny_llama, device="cpu").extract(prompts, LAYERS)


def saved(root: Path, report: ProbeReport, name: str) -> Path:
    return save_probe(report, root / "probes" / "tiny" / name)


def test_the_newest_passing_probe_of_another_key_predicts_from_the_new_models_states(tmp_path, tiny_llama, pool):
    frame, features = pool
    good = fitted(features, LAYERS, "old-key", "2026-12-01T00:00:00+00:00", signal=True)
    assert probe_passes(good)[0]
    weak = fitted(features, LAYERS, "weak-key", "2026-12-02T00:00:00+00:00", signal=False)
    assert not probe_passes(weak)[0]
    folder = saved(tmp_path, good, "good")
    saved(tmp_path, weak, "weak")  # newer, but below its floor: never a prior

    found = transferable_probe(tmp_path / "probes", tiny_llama, "new-key")
    assert found is not None and found.folder == folder and found.label_key == "old-key"
    predicted = found.predict(tiny_llama, frame, tmp_path / "hidden_states")
    column = LAYERS.index(good.chosen_layer)
    expected = predict(good, features[:, [column]])[0]
    assert predicted.shape == (N,) and ((predicted >= 0) & (predicted <= 1)).all()
    # the cache stores float16 states: the same predictions up to that rounding
    np.testing.assert_allclose(predicted, expected, atol=0.02)
    assert list((tmp_path / "hidden_states").rglob("*.parquet")), "the prefill is cached for the next run"


def test_no_probe_is_transferred_to_its_own_key_another_width_or_from_an_empty_folder(
        tmp_path, tiny_llama, smollm2, pool):
    _, features = pool
    saved(tmp_path, fitted(features, LAYERS, "old-key", "2026-12-01T00:00:00+00:00", signal=True), "good")
    assert transferable_probe(tmp_path / "probes", tiny_llama, "old-key") is None
    assert transferable_probe(tmp_path / "probes", smollm2, "new-key") is None  # 576 wide, not tiny's width
    assert transferable_probe(tmp_path / "nothing", tiny_llama, "new-key") is None


def test_a_torn_probe_folder_is_passed_over(tmp_path, tiny_llama, pool):
    _, features = pool
    good = saved(tmp_path, fitted(features, LAYERS, "old-key", "2026-12-01T00:00:00+00:00", signal=True), "good")
    torn = saved(tmp_path, fitted(features, LAYERS, "new-key-2", "2026-12-03T00:00:00+00:00", signal=True), "torn")
    (torn / "probe.npz").write_bytes(b"PK\x03\x04 torn")
    assert transferable_probe(tmp_path / "probes", tiny_llama, "new-key").folder == good
