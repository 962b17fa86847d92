"""A PEFT LoRA adapter as a GGUF LoRA that llama.cpp (and llama-cpp-python's
``lora_path``, and Ollama's ``ADAPTER``) loads, plus the Ollama Modelfile.

The adapter GGUF holds ``general.type = "adapter"``, ``adapter.type = "lora"``,
``adapter.lora.alpha``, ``general.architecture`` (the base model's), and per
adapted weight two tensors named after the base tensor: ``<name>.lora_a``
(rank x in) and ``<name>.lora_b`` (out x rank); llama.cpp scales ``B @ A`` by
``alpha / rank``, as PEFT does. llama.cpp stores the query and key projections
of llama-style models with their rows permuted for its rotary layout, so those
``lora_b`` rows are permuted the same way. Needs ``gguf``, ``numpy`` and
``safetensors`` (the ``finetune`` extra), not torch.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .._errors import ConfigError, MissingDependencyError

__all__ = ["peft_to_gguf", "write_modelfile", "gguf_tensor_name"]

_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.lora_([AB])\.weight$")
_NAMES = {
    "q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
    "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down",
}


def _modules() -> tuple[Any, Any, Any]:
    try:
        import gguf
        import numpy as np
        from safetensors.numpy import load_file
    except ImportError:
        raise MissingDependencyError("gguf and safetensors (for the GGUF LoRA adapter)", "finetune") from None
    return gguf, np, load_file


def gguf_tensor_name(peft_name: str) -> tuple[str, str, str]:
    """``(base GGUF tensor name, "a"|"b", projection)`` for a PEFT tensor name.

    Raises:
        ConfigError: the tensor is not a llama-style attention or MLP projection.
    """
    m = _LAYER.search(peft_name)
    if m is None or m.group(3) not in _NAMES:
        raise ConfigError("lora.targets", f"cannot map adapter tensor {peft_name!r} to a llama.cpp tensor; "
                          f"adapt only {', '.join(_NAMES)}")
    layer, _, proj, ab = m.groups()
    return f"blk.{layer}.{_NAMES[proj]}.weight", ab.lower(), proj


def _rope_permute(np: Any, rows: Any, heads: int) -> Any:
    """llama.cpp's row order for a query/key projection: within each head, the
    interleaved halves (HF's rotate-half layout) become pairs."""
    out = rows.shape[0]
    return rows.reshape(heads, 2, out // heads // 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def peft_to_gguf(peft_dir: str | Path, out: str | Path, *, arch: str = "llama") -> Path:
    """Convert the PEFT adapter saved in ``peft_dir`` (``adapter_config.json`` and
    ``adapter_model.safetensors``; the base model's ``config.json`` beside or in
    ``base_config``) into a GGUF LoRA at ``out``.

    Raises:
        ConfigError: the adapter is missing, or adapts a tensor llama.cpp cannot take.
        MissingDependencyError: ``gguf``/``safetensors`` are not installed.
    """
    gguf, np, load_file = _modules()
    src = Path(peft_dir)
    try:
        cfg = json.loads((src / "adapter_config.json").read_text())
        base = json.loads((src / "base_config.json").read_text())
        tensors = load_file(str(src / "adapter_model.safetensors"))
    except (OSError, ValueError) as exc:
        raise ConfigError("lora.adapter", f"cannot read the PEFT adapter in {str(src)!r} ({exc}); train it again") from None
    heads = {"q_proj": int(base["num_attention_heads"]),
             "k_proj": int(base.get("num_key_value_heads") or base["num_attention_heads"])}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    writer = gguf.GGUFWriter(str(tmp), arch)
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(cfg["lora_alpha"]))
    for name in sorted(tensors):
        target, ab, proj = gguf_tensor_name(name)
        value = np.ascontiguousarray(tensors[name].astype(np.float32))
        if ab == "b" and proj in heads:
            value = np.ascontiguousarray(_rope_permute(np, value, heads[proj]))
        writer.add_tensor(f"{target}.lora_{ab}", value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(out)
    return out


def write_modelfile(path: str | Path, *, base: str, adapter: str | Path, system: str | None = None) -> Path:
    """An Ollama Modelfile: ``FROM <base>`` and ``ADAPTER <adapter>`` (then
    ``ollama create NAME -f Modelfile``). ``base`` is an Ollama tag or a GGUF path;
    it must be the model the adapter was trained on."""
    lines = ["# Made by slmgraph learn: the base model and the LoRA adapter trained on it.",
             f"FROM {base}", f"ADAPTER {Path(adapter).resolve()}"]
    if system:
        lines.append('SYSTEM """' + system.replace('"""', "'''") + '"""')
    p = Path(path)
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p
