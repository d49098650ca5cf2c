"""Model folders: which model and revision a folder resolves to, the embedded model's one-time
conversion, and the errors for folders that are not models."""

import json
import shutil
import time
from pathlib import Path

import pytest

from pipeline.core.model import (
    EMBEDDED_MODEL_ID,
    GEMMA_TURNS_TEMPLATE,
    MODEL_MARKER,
    ModelSpec,
    embedded_gguf_path,
    embedded_model,
    folder_revision,
    load_tokenizer,
    packaged_model,
    resolve_model,
    write_marker,
)


@pytest.fixture
def folder(tiny_llama, tmp_path):
    """A private copy of the tiny model folder, free to change."""
    return shutil.copytree(tiny_llama.path, tmp_path / "tiny")


def test_a_plain_folder_resolves_to_its_name_and_content_hash(folder):
    spec = resolve_model(str(folder))
    assert spec == ModelSpec(str(folder.resolve()), "tiny", folder_revision(folder))
    assert spec.key == f"tiny@{spec.revision}"
    assert resolve_model(str(folder), model_id="org/name", revision="r9") == ModelSpec(
        str(folder.resolve()), "org/name", "r9")


def test_a_marker_names_the_model_and_its_revision(folder):
    write_marker(folder, "org/base", "abc123")
    assert resolve_model(str(folder)) == ModelSpec(str(folder.resolve()), "org/base", "abc123")
    assert resolve_model(str(folder)).key == "org-base@abc123"


def test_the_revision_follows_weights_and_config_only(folder, tmp_path):
    revision = folder_revision(folder)
    elsewhere = shutil.copytree(folder, tmp_path / "elsewhere")
    assert folder_revision(elsewhere) == revision  # content, not location
    (folder / "README.md").write_text("notes")
    (folder / MODEL_MARKER).write_text("{}")
    assert folder_revision(folder) == revision  # neither notes nor the marker are the model
    [weights] = folder.glob("*.safetensors")
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    changed = folder_revision(folder)
    assert changed != revision
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "rope_theta": 1234.0}))
    assert folder_revision(folder) not in {revision, changed}


def test_folders_that_are_not_models_are_refused(tmp_path):
    with pytest.raises(ValueError, match="no config.json"):
        resolve_model(str(tmp_path))
    with pytest.raises(ValueError, match="not a Hugging Face model folder"):
        resolve_model(str(tmp_path / "missing"))


def test_the_tokenizer_pads_on_the_left(tiny_llama):
    tokenizer = load_tokenizer(tiny_llama)
    assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None


def test_the_embedded_model_is_converted_once_and_marked(smollm2):
    folder = Path(smollm2.path)
    marker = json.loads((folder / MODEL_MARKER).read_text())
    gguf = embedded_gguf_path()
    assert marker == {"model_id": EMBEDDED_MODEL_ID, "revision": smollm2.revision, "gguf": gguf.name,
                      "gguf_size": gguf.stat().st_size, "content": folder_revision(folder)}
    assert smollm2.model_id == EMBEDDED_MODEL_ID and smollm2.revision.startswith("gguf-q4_1-")
    assert (folder / "config.json").is_file() and list(folder.glob("*.safetensors"))

    home = folder.parents[1]  # <home>/models/smollm2-135m-instruct
    written = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    started = time.perf_counter()
    assert embedded_model(home) == smollm2 == resolve_model(None, home=home)
    assert time.perf_counter() - started < 10  # reused, not converted again (~30 s)
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == written


def flip_last_byte(path: Path) -> None:
    """Change a file in place, as a trainer overwriting a checkpoint's weights does."""
    with open(path, "r+b") as fh:
        fh.seek(-1, 2)
        last = fh.read(1)
        fh.seek(-1, 2)
        fh.write(bytes([last[0] ^ 1]))


def test_a_marker_never_vouches_for_weights_it_was_not_written_for(folder):
    """A marker names the model; its revision holds only for the content it was recorded with."""
    (folder / MODEL_MARKER).write_text(json.dumps({"model_id": "org/base", "revision": "abc123",
                                                   "content": folder_revision(folder)}))
    assert resolve_model(str(folder)).revision == "abc123"
    [weights] = folder.glob("*.safetensors")
    flip_last_byte(weights)
    assert resolve_model(str(folder)) == ModelSpec(str(folder.resolve()), "org/base", folder_revision(folder))
    (folder / MODEL_MARKER).write_text(json.dumps({"model_id": "org/base", "revision": "abc123"}))
    assert resolve_model(str(folder)).revision == folder_revision(folder)  # a marker recording no content


@pytest.mark.parametrize("name", ["chat_template.jinja", "tokenizer.model", "merges.txt", "vocab.txt",
                                  "special_tokens_map.json"])
def test_the_revision_follows_the_chat_template_and_every_tokenizer_file(folder, name):
    revision = folder_revision(folder)
    path = folder / name
    path.write_text((path.read_text() if path.exists() else "") + "{# Answer in binary. #}")
    changed = folder_revision(folder)
    assert changed != revision
    (folder / ".hidden.tmp").write_text("a half-written file")
    (folder / "LICENSE").write_text("terms")
    assert folder_revision(folder) == changed  # hidden files and licences are not the model


def test_rewritten_weights_of_the_embedded_model_are_converted_again(smollm2, tmp_path, monkeypatch):
    from pipeline.core import model as model_module

    home = tmp_path / "home"
    folder = shutil.copytree(smollm2.path, home / "models" / Path(smollm2.path).name)

    def converting(gguf, out, *supplied):
        raise RuntimeError(f"converting {gguf.name} into {out}")

    monkeypatch.setattr(model_module, "convert_gguf", converting)
    assert embedded_model(home).revision == smollm2.revision  # intact: reused
    flip_last_byte(folder / "model.safetensors")
    with pytest.raises(RuntimeError, match="converting"):
        embedded_model(home)


def test_an_unknown_packaged_model_is_refused_with_the_known_names():
    with pytest.raises(ValueError, match="no packaged model named 'llama9'; known: smollm2-135m-instruct, gemma3-270m"):
        packaged_model("llama9")


def test_the_gemma_turn_template_opens_the_first_user_turn_with_the_system_prompt():
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    template = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(GEMMA_TURNS_TEMPLATE)
    messages = [{"role": "system", "content": "Be brief. "}, {"role": "user", "content": "2+2?"},
                {"role": "assistant", "content": "4"}, {"role": "user", "content": "3+3?"}]
    assert template.render(messages=messages, bos_token="<bos>", add_generation_prompt=True) == (
        "<bos><start_of_turn>user\nBe brief.\n\n2+2?<end_of_turn>\n<start_of_turn>model\n4<end_of_turn>\n"
        "<start_of_turn>user\n3+3?<end_of_turn>\n<start_of_turn>model\n")


def test_gemma3_is_assembled_converted_and_generates_text(gemma3):
    import torch
    from transformers import AutoModelForCausalLM

    folder = Path(gemma3.path)
    marker = json.loads((folder / MODEL_MARKER).read_text())
    assert (gemma3.model_id, marker["gguf"]) == ("google/gemma-3-270m", "gemma-3-270m-q4_k_m.gguf")
    assert gemma3.revision == "gguf-q4_k_m-a5fd3b6223"  # the chunk packages' sha256-checked file
    assert resolve_model(None, home=folder.parents[1], packaged="gemma3-270m") == gemma3
    tokenizer = load_tokenizer(gemma3)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is 7 + 5?"}],
                                           add_generation_prompt=True, tokenize=False)
    assert prompt == "<bos><start_of_turn>user\nWhat is 7 + 5?<end_of_turn>\n<start_of_turn>model\n"
    model = AutoModelForCausalLM.from_pretrained(gemma3.path, dtype=torch.float32)
    assert model.generation_config.eos_token_id == [1, tokenizer.convert_tokens_to_ids("<end_of_turn>")] == [1, 106]
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    text = tokenizer.decode(out[0][ids["input_ids"].shape[1]:], skip_special_tokens=True)
    # The base model (not instruction-tuned) echoes the question before it answers; greedy is repeatable.
    assert text.startswith("What is 7 + 5?")
