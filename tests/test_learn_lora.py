"""LoRA really trains: a few steps on tiny data lower the loss; the converted GGUF
adapter loads in llama-cpp-python and moves the model's next-token distribution
toward what it was trained on; the Modelfile names base and adapter; a killed run
resumes; without torch the error names the extra."""

from __future__ import annotations

import builtins
import json
import sys

import numpy as np
import pytest

from slmgraph import MissingDependencyError
from slmgraph.learn import TrainingInterruptedError
from slmgraph.learn._gguf_lora import gguf_tensor_name, peft_to_gguf, write_modelfile
from slmgraph.learn._lora import LoraSettings, finetune_modules, train_lora
from slmgraph.models._llamacpp import default_gguf_path

SYSTEM = "Rate the sentiment of the review. Reply with JSON."
DATA = [("I love this phone", "positive"), ("Terrible service, never again", "negative"),
        ("Great value and fast delivery", "positive"), ("It broke after a day", "negative"),
        ("Absolutely wonderful staff", "positive"), ("The worst purchase I ever made", "negative")]
CHATS = [([{"role": "system", "content": SYSTEM}, {"role": "user", "content": t}], json.dumps({"sentiment": s})) for t, s in DATA]
UNSEEN = "The food was cold and the waiter ignored us"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("lora")
    result = train_lora(CHATS, out, settings=LoraSettings(steps=8, batch_size=3, lr=2e-3, save_every=4))
    adapter = peft_to_gguf(result.adapter_dir, out / "adapter.gguf")
    return result, adapter


def test_a_few_steps_on_tiny_data_lower_the_loss(trained):
    result, _ = trained
    assert result.steps == 8 and len(result.losses) == 8
    assert np.mean(result.losses[-2:]) < 0.5 * np.mean(result.losses[:2])
    assert result.peak_rss_mib > 0


def _next_token_probs(lora=None):
    from llama_cpp import Llama

    kw = {"lora_path": str(lora)} if lora else {}
    llm = Llama(model_path=str(default_gguf_path()), n_ctx=512, logits_all=True, verbose=False, **kw)
    prompt = (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{UNSEEN}<|im_end|>\n<|im_start|>assistant\n")
    llm.eval(llm.tokenize(prompt.encode(), add_bos=False, special=True))
    logits = np.asarray(llm.scores[llm.n_tokens - 1], dtype=np.float64)
    p = np.exp(logits - logits.max())
    first = llm.tokenize(b'{"', add_bos=False, special=False)[0]
    out = p / p.sum(), first, llm
    return out


def test_the_converted_adapter_loads_in_llama_cpp_and_changes_the_output_distribution(trained):
    _, adapter = trained
    import gguf

    reader = gguf.GGUFReader(str(adapter))
    field = lambda k: reader.fields[k]  # noqa: E731
    assert bytes(field("general.type").parts[-1]).decode() == "adapter"
    assert bytes(field("adapter.type").parts[-1]).decode() == "lora"
    assert float(field("adapter.lora.alpha").parts[-1][0]) == 16.0
    names = {t.name for t in reader.tensors}
    assert "blk.0.attn_q.weight.lora_a" in names and "blk.29.attn_v.weight.lora_b" in names
    base, first, _ = _next_token_probs()
    tuned, _, _ = _next_token_probs(adapter)
    kl = float((tuned * np.log(tuned / np.maximum(base, 1e-30))).sum())
    assert kl > 0.5  # a different distribution...
    assert tuned[first] > 0.5 > base[first]  # ...that starts the JSON answer it was trained to give
    # and it serves through slmgraph's embedded engine
    from slmgraph.learn._lora import LoraStrategy  # noqa: F401  (the strategy binds this model)
    from slmgraph.models._llamacpp import LlamaCppModel
    from slmgraph.models._base import Message
    from slmgraph._sync import run_sync

    reply = run_sync(LlamaCppModel(lora_path=adapter).complete(
        [Message("system", SYSTEM), Message("user", UNSEEN)], schema={"type": "object", "properties": {"sentiment": {"type": "string"}}}))
    assert json.loads(reply.text)["sentiment"] == "negative"


def test_the_modelfile_names_the_base_and_the_adapter(trained, tmp_path):
    _, adapter = trained
    text = write_modelfile(tmp_path / "Modelfile", base="smollm2:135m", adapter=adapter).read_text()
    lines = [ln for ln in text.splitlines() if not ln.startswith("#")]
    assert lines[0] == "FROM smollm2:135m"
    assert lines[1] == f"ADAPTER {adapter.resolve()}"


def test_a_killed_run_resumes_from_its_checkpoint_and_other_data_starts_clean(tmp_path):
    settings = LoraSettings(steps=4, batch_size=1, save_every=2, max_length=48)

    def kill_at_3(step, loss):
        if step == 3:
            raise KeyboardInterrupt("killed")

    with pytest.raises(TrainingInterruptedError, match="step 3 of 4"):
        train_lora(CHATS[:2], tmp_path, settings=settings, on_step=kill_at_3)
    again = train_lora(CHATS[:2], tmp_path, settings=settings)
    assert again.resumed_from == 2 and again.steps == 4 and len(again.losses) == 4
    other = train_lora(CHATS[2:4], tmp_path, settings=LoraSettings(steps=1, batch_size=1, max_length=48))
    assert other.resumed_from == 0 and other.steps == 1
    (tmp_path / "train_state.pt").write_bytes(b"not a checkpoint")
    clean = train_lora(CHATS[:2], tmp_path, settings=LoraSettings(steps=1, batch_size=1, max_length=48))
    assert clean.resumed_from == 0


def test_adapter_tensor_names_map_to_llama_cpp_and_others_are_refused():
    assert gguf_tensor_name("base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight") == ("blk.3.attn_q.weight", "a", "q_proj")
    assert gguf_tensor_name("base_model.model.model.layers.0.mlp.down_proj.lora_B.weight")[0] == "blk.0.ffn_down.weight"
    from slmgraph import ConfigError

    with pytest.raises(ConfigError, match="cannot map"):
        gguf_tensor_name("base_model.model.lm_head.lora_A.weight")


def test_without_torch_the_error_names_the_extra(monkeypatch):
    real = builtins.__import__

    def no_torch(name, *a, **kw):
        if name.split(".")[0] in ("torch", "peft"):
            raise ImportError(f"No module named {name!r}")
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    monkeypatch.delitem(sys.modules, "peft", raising=False)
    with pytest.raises(MissingDependencyError, match=r"slmgraph\[finetune\]"):
        finetune_modules()
    with pytest.raises(MissingDependencyError, match="finetune"):
        train_lora(CHATS, "/nonexistent")
