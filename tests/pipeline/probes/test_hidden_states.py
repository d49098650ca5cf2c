"""Hidden-state features on a tiny random Llama that shares SmolLM2's tokenizer and chat template."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.core.model import ModelSpec
from pipeline.probes import hidden_states
from pipeline.probes.hidden_states import (
    HiddenStateExtractor,
    HiddenStateStore,
    compute_hidden_states,
    default_layers,
)

PROMPTS = [
    [{"role": "user", "content": "What is 2 + 3?"}],
    [{"role": "user", "content": "A farmer has 3 cows and 2 chickens. How many legs are there in total?"}],
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Compute 17 * 4."}],
    [{"role": "user", "content": "Solve for x: 3x + 4 = 19. " + "Show your steps. " * 6}],
    [{"role": "user", "content": "9 - 11 = ?"}],
]


@pytest.fixture(scope="module")
def tiny_model(tiny_llama: ModelSpec) -> ModelSpec:
    """The session's 2-layer random Llama (tests/conftest.py)."""
    return tiny_llama


@pytest.fixture(scope="module")
def extractor(tiny_model: ModelSpec) -> HiddenStateExtractor:
    return HiddenStateExtractor(tiny_model, device="cpu")


def problems_frame(n: int = len(PROMPTS)) -> pd.DataFrame:
    return pd.DataFrame({"problem_id": [f"p{i}" for i in range(n)], "prompt": PROMPTS[:n]})


def test_default_layers_spread_over_depth_without_embeddings() -> None:
    assert default_layers(30) == (5, 10, 15, 20, 25, 30)
    assert default_layers(30, k=3) == (10, 20, 30)
    assert default_layers(2) == (1, 2)
    assert default_layers(1, k=4) == (1,)
    with pytest.raises(ValueError):
        default_layers(0)


def test_extract_shape_dtype_and_determinism(extractor: HiddenStateExtractor) -> None:
    layers = (0, 1, 2)
    first = extractor.extract(PROMPTS, layers, batch_size=4)
    second = extractor.extract(PROMPTS, layers, batch_size=4)
    assert first.shape == (len(PROMPTS), 3, 32)
    assert first.dtype == np.float32
    assert np.isfinite(first).all()
    np.testing.assert_array_equal(first, second)
    # Distinct prompts get distinct states past the embeddings; at layer 0 the last token is the
    # generation prompt's, identical for all.
    assert not np.allclose(first[0, 2], first[1, 2])
    np.testing.assert_allclose(first[0, 0], first[1, 0])


def test_batched_equals_one_at_a_time(extractor: HiddenStateExtractor) -> None:
    layers = (1, 2)
    batched = extractor.extract(PROMPTS, layers, batch_size=len(PROMPTS))
    single = np.concatenate([extractor.extract([p], layers) for p in PROMPTS])
    np.testing.assert_allclose(batched, single, atol=1e-4, rtol=1e-4)


def test_shallow_layers_match_a_full_depth_pass(extractor: HiddenStateExtractor) -> None:
    full = extractor.extract(PROMPTS, (0, 1, 2), batch_size=2)
    # Only the layers up to the deepest one asked for run; what they return must not change.
    np.testing.assert_allclose(extractor.extract(PROMPTS, (1,), batch_size=2)[:, 0], full[:, 1], atol=1e-5)
    np.testing.assert_allclose(extractor.extract(PROMPTS, (0,), batch_size=2)[:, 0], full[:, 0], atol=1e-5)
    # The model is whole again afterwards: the last layer still comes back as before.
    np.testing.assert_array_equal(extractor.extract(PROMPTS, (0, 1, 2), batch_size=2), full)


def test_extract_rejects_bad_layers(extractor: HiddenStateExtractor) -> None:
    with pytest.raises(ValueError, match="out of range"):
        extractor.extract(PROMPTS[:1], (3,))
    with pytest.raises(ValueError, match="duplicate"):
        extractor.extract(PROMPTS[:1], (1, 1))


def test_store_caches_and_never_recomputes(
    tiny_model: ModelSpec, extractor: HiddenStateExtractor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    frame = problems_frame()
    states, layers, computed = compute_hidden_states(tiny_model, frame.iloc[:3], tmp_path, batch_size=2)
    assert layers == (1, 2) and computed == 3 and states.shape == (3, 2, 32)

    # A superset computes only the new problems; the old ones are read back, not recomputed.
    states, _, computed = compute_hidden_states(tiny_model, frame, tmp_path, batch_size=2)
    assert computed == 2
    np.testing.assert_allclose(states, extractor.extract(PROMPTS, layers), atol=2e-3, rtol=2e-3)

    class Refuse:
        def __init__(self, *args: object, **kwargs: object) -> None:
            raise AssertionError("a cached key must not load the model")

    monkeypatch.setattr(hidden_states, "HiddenStateExtractor", Refuse)
    again, _, computed = compute_hidden_states(tiny_model, frame.iloc[::-1], tmp_path)
    assert computed == 0
    np.testing.assert_array_equal(again, states[::-1])


def test_store_layout_and_key(tiny_model: ModelSpec, tmp_path: Path) -> None:
    frame = problems_frame(2)
    compute_hidden_states(tiny_model, frame, tmp_path, layers=(2,), dtype="float16")
    _, _, computed = compute_hidden_states(tiny_model, frame, tmp_path, layers=(2,), dtype="float32")
    assert computed == 2  # dtype is part of the key

    store = HiddenStateStore(tmp_path, tiny_model.key, (2,), "float16")
    parts = list(store.folder.glob("part-*.parquet"))
    assert len(parts) == 1
    schema = pq.read_schema(parts[0])
    assert schema.field("layer_2").type == pa.list_(pa.float16(), 32)
    assert store.missing(["p1", "new", "p0", "new"]) == ["new"]
    with pytest.raises(KeyError):
        store.load(["p0", "new"])


def test_store_append_skips_stored_and_duplicate_ids(tmp_path: Path) -> None:
    store = HiddenStateStore(tmp_path, "m@1", (1, 2), "float32")
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2, 2, 4)).astype(np.float32)
    store.append(["x", "y"], a)
    b = rng.normal(size=(3, 2, 4)).astype(np.float32)
    store.append(["y", "z", "z"], b)
    loaded = store.load(["z", "y", "x"])
    np.testing.assert_array_equal(loaded, np.stack([b[1], a[1], a[0]]))
    with pytest.raises(ValueError, match="do not match"):
        store.append(["w"], a)


def test_store_refuses_float16_overflow(tmp_path: Path) -> None:
    store = HiddenStateStore(tmp_path, "m@1", (1,), "float16")
    with pytest.raises(ValueError, match="overflow"):
        store.append(["x"], np.full((1, 1, 4), 1e6, dtype=np.float32))
