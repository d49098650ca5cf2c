"""Both engines on the real SmolLM2 model: same requests, same record, reproducible samples."""

import pytest

from pipeline.engines import GenerationRequest, SamplingConfig, create_engine

PROMPTS = ["What is 2 + 3?", "What is 7 - 4?", "Name a colour."]


def requests(n=2):
    return [GenerationRequest.of(f"p{i}", j, [{"role": "user", "content": q}])
            for i, q in enumerate(PROMPTS) for j in range(n)]


def check_records(completions, sampling):
    assert len(completions) == 6
    for c in completions:
        assert isinstance(c.text, str)
        assert 1 <= c.num_tokens <= sampling.max_tokens
        assert c.finish_reason in {"stop", "length"}
        assert (c.finish_reason == "length") == (c.num_tokens == sampling.max_tokens) or c.finish_reason == "stop"


def test_sampling_config_validates():
    with pytest.raises(ValueError):
        SamplingConfig(temperature=-1)
    with pytest.raises(ValueError):
        SamplingConfig(top_p=0)
    with pytest.raises(ValueError):
        SamplingConfig(max_tokens=0)


def test_unknown_engine_is_refused(smollm2):
    with pytest.raises(ValueError, match="unknown engine"):
        create_engine("tgi", smollm2)


def test_transformers_engine_records_and_reproducibility(smollm2):
    sampling = SamplingConfig(max_tokens=16, seed=1)
    with create_engine("transformers", smollm2, batch_size=8) as engine:
        seen = []
        first = engine.generate(requests(), sampling, progress=lambda d, t, r: seen.append((d, t)))
        again = engine.generate(requests(), sampling)
    check_records(first, sampling)
    assert [c.text for c in first] == [c.text for c in again]
    assert seen[-1] == (6, 6)


@pytest.mark.e2e
def test_vllm_engine_seeds_are_independent_of_batching(smollm2):
    sampling = SamplingConfig(max_tokens=16, seed=1)
    reqs = requests()
    with create_engine("vllm", smollm2) as engine:
        together = engine.generate(reqs, sampling)
        alone = engine.generate(reqs[3:4], sampling)
        batches = []
        engine.generate(reqs, sampling, on_batch=lambda b, c: batches.append(len(b)))
    check_records(together, sampling)
    assert alone[0].text == together[3].text
    assert sum(batches) == len(reqs)
