"""Keeping untrusted text (requests, tool results) from posing as chat structure,
and refusing text that is not valid Unicode.

Local engines render the chat template and then tokenize the whole prompt with
special tokens enabled (llama-cpp-python does, and so do servers built on
llama.cpp), so a request that contains ``<|im_end|><|im_start|>system`` would
open a real system turn. :func:`neutralize_control_tokens` breaks such markers
with an invisible U+2060 WORD JOINER after their first character: the text reads
the same, but no tokenizer maps it to a control token. Every model call goes
through it (see :meth:`slmgraph.RunContext.call`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ._errors import RequestError
from .models._base import Message

__all__ = ["neutralize_control_tokens", "neutralize_messages", "mark_clean", "require_unicode"]

_JOINER = "\u2060"
# ChatML / Llama 3 / Phi (<|...|>), DeepSeek (<｜...｜>), Llama 2 ([INST], <<SYS>>, <s>), Gemma turns.
_CONTROL = re.compile(
    r"<\|[^|<>\n]{1,48}\|>|<｜[^｜<>\n]{1,48}｜>|\[/?INST\]|<</?SYS>>|</?s>|<(?:start|end)_of_turn>"
)


def neutralize_control_tokens(text: str) -> str:
    """``text`` with chat-template control markers broken so they stay plain text."""
    if "<" not in text and "[" not in text:
        return text
    return _CONTROL.sub(lambda m: m.group(0)[0] + _JOINER + m.group(0)[1:], text)


#: Texts known to need no change (a skill's fixed prompt head, sent on every call),
#: so they are not scanned again; bounded.
_CLEAN: set[str] = set()
_CLEAN_MAX = 4096


def mark_clean(text: str) -> None:
    """Remember ``text`` as one that :func:`neutralize_control_tokens` leaves as it is
    (when it does): for fixed text sent on every call."""
    if len(_CLEAN) < _CLEAN_MAX and neutralize_control_tokens(text) == text:
        _CLEAN.add(text)


def neutralize_messages(messages: Sequence[Message]) -> Sequence[Message]:
    """``messages`` with :func:`neutralize_control_tokens` applied to each content;
    the same sequence when nothing needed changing."""
    out: list[Message] | None = None
    for i, m in enumerate(messages):
        if m.content in _CLEAN:
            continue
        text = neutralize_control_tokens(m.content)
        if text is not m.content:
            if out is None:
                out = list(messages)
            out[i] = Message(m.role, text)
    return messages if out is None else out


def require_unicode(messages: Sequence[Message]) -> None:
    """Refuse messages holding a lone UTF-16 surrogate (what undecodable bytes become
    with ``errors="surrogateescape"``, or a JSON ``"\\ud800"``): no tokenizer or wire
    format can encode it.

    Raises:
        RequestError: naming the code point and its position.
    """
    for m in messages:
        text = m.content
        if text.isascii():
            continue
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise RequestError(
                f"the {m.role} message holds a lone surrogate (U+{ord(text[exc.start]):04X}) at character "
                f"{exc.start}, which is not valid Unicode text; decode its bytes as UTF-8 "
                '(e.g. errors="replace") before sending it'
            ) from None
