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
        if c.finish_reason == "length":
            assert c.num_tokens == sampling.max_tokens  # only the cap reports `length`


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


def greedy_next_token(model, tokenizer, request, text):
    """The token SmolLM2 would write next after `text`, greedily."""
    import torch

    prompt = tokenizer.apply_chat_template(request.chat(), tokenize=False, add_generation_prompt=True)
    ids = tokenizer(prompt + text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        return int(model(ids).logits[0, -1].argmax())


def test_finish_reasons_say_what_ended_the_text(smollm2):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    reqs = requests(1)
    with create_engine("transformers", smollm2, batch_size=1) as engine:
        capped = engine.generate(reqs, SamplingConfig(temperature=0.0, max_tokens=1))
        free = engine.generate(reqs, SamplingConfig(temperature=0.0, max_tokens=96))
    # one token is never a whole answer: the cap ended every text
    assert [(c.finish_reason, c.num_tokens) for c in capped] == [("length", 1)] * len(reqs)

    # short questions, greedy: the model ends its answers itself, and the token it would write
    # next after each stopped text is its end-of-sequence token
    stopped = [(r, c) for r, c in zip(reqs, free) if c.finish_reason == "stop"]
    assert stopped, [c.text for c in free]
    model = AutoModelForCausalLM.from_pretrained(smollm2.path)
    tokenizer = AutoTokenizer.from_pretrained(smollm2.path)
    eos = model.generation_config.eos_token_id
    eos = set(eos) if isinstance(eos, (list, tuple)) else {eos}
    for request, completion in stopped:
        assert completion.num_tokens < 96 and completion.text.strip()
        assert greedy_next_token(model, tokenizer, request, completion.text) in eos, completion.text
    assert all(c.num_tokens == 96 for c in free if c.finish_reason == "length")


@pytest.mark.e2e
def test_vllm_engine_seeds_are_independent_of_batching(smollm2):
    from vllm import SamplingParams

    sampling = SamplingConfig(max_tokens=16, seed=1)
    reqs = requests()
    with create_engine("vllm", smollm2) as engine:
        together = engine.generate(reqs, sampling)
        alone = engine.generate(reqs[3:4], sampling)
        groups = []
        engine._batch_size = 2  # a window smaller than the requests: finished ones are replaced
        windowed = engine.generate(reqs, sampling, on_batch=lambda b, c: groups.append((list(b), c)))
        # The streamed path renders and seeds requests as `LLM.chat` does, to the same completions.
        params = [SamplingParams(n=1, temperature=sampling.temperature, top_p=sampling.top_p,
                                 max_tokens=sampling.max_tokens,
                                 seed=sampling.request_seed(r.problem_id, r.sample_index)) for r in reqs]
        chat = engine._llm.chat([r.chat() for r in reqs], params, use_tqdm=False)

        def fail(batch, completions):
            raise OSError("disk full")

        with pytest.raises(OSError):  # a caller that stops early leaves nothing queued in vLLM
            engine.generate(reqs, sampling, on_batch=fail)
        assert not engine._llm.llm_engine.has_unfinished_requests()
        after = engine.generate(reqs, sampling)
    check_records(together, sampling)
    assert alone[0].text == together[3].text
    assert [c.text for c in windowed] == [c.text for c in together]
    assert [out.outputs[0].text for out in chat] == [c.text for c in together]
    assert [c.text for c in after] == [c.text for c in together]
    assert all(len(b) <= 2 for b, _ in groups)
    assert sorted((r.problem_id, r.sample_index) for b, _ in groups for r in b) == sorted(
        (r.problem_id, r.sample_index) for r in reqs)
    for batch, completions in groups:  # each group pairs a request with its own completion
        for request, completion in zip(batch, completions):
            assert completion.text == together[reqs.index(request)].text


@pytest.mark.gpu
def test_vllm_engine_on_cuda_keeps_the_gpu_window_and_reproduces(smollm2):
    """The CUDA path (upstream `vllm`, GRADUS_ENGINE_BUILD=gpu): a GPU-sized window, the model
    on the device, and per-request seeds that give the same text whatever the batch."""
    from pipeline.engines.vllm_engine import VLLMEngine

    sampling = SamplingConfig(max_tokens=16, seed=1)
    reqs = requests()
    with create_engine("vllm", smollm2) as engine:
        assert engine.batch_size() == VLLMEngine.GPU_BATCH_SIZE
        together = engine.generate(reqs, sampling)
        alone = engine.generate(reqs[3:4], sampling)
    check_records(together, sampling)
    assert alone[0].text == together[3].text
