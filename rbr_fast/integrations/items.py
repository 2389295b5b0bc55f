"""Reading one item (prompt, completion, response type) before it joins a shared grader batch: the
check, so that a malformed item fails its own call with a message naming it, never the batch it
would join; and the answer of a reasoning model's completion (``answer_only``), which is what the
grader judges by default.

``answer_only`` lives here, in the adapters' layer, because only the adapters and the server
choose what of a completion is graded; ``RuleBasedReward`` grades whatever text it is given."""
from __future__ import annotations

import re
from typing import Any, Mapping, Optional, Sequence

from ..grading.prompts import transcript_parts
from ..reward import answer_shares
from ..rules import RuleSpec


class ItemError(ValueError):
    """An item the grader cannot read; the message names the item and the field."""


def check_item(spec: RuleSpec, prompt: Any, completion: Any, response_type: Any = None,
               where: str = "item") -> tuple:
    """``(prompt, completion, response type name or None)`` once the grader's transcript renders
    both texts (the same rendering it grades: strings, messages, tool calls, list-of-parts content)
    and the type is one of ``spec``'s (by name or label). Raises ``ItemError`` naming ``where.field``."""
    for field, value, render in (("prompt", prompt, lambda x: transcript_parts(x, None)),
                                 ("completion", completion, lambda x: transcript_parts("", x))):
        try:
            render(value)
        except (TypeError, ValueError, AttributeError) as e:
            # the grader names the text by its own list ("conversations[0] must be ..."); name the item
            rest, named = re.subn(r"^(conversations|completions)\[\d+\]", "", str(e), count=1)
            raise ItemError(f"{where}.{field}{rest}" if named else f"{where}.{field}: {e}") from None
    if response_type is None:
        return prompt, completion, None
    if not isinstance(response_type, str):
        raise ItemError(f"{where}.response_type must be a string or null, got {type(response_type).__name__}")
    name = as_type(spec, response_type)
    if name is None:
        raise ItemError(f"{where}.response_type: unknown response type {ascii(response_type)}; known: "
                        f"{spec.response_type_names} or their labels")
    return prompt, completion, name


def as_type(spec: RuleSpec, label: Any) -> Optional[str]:
    """The response type a label names (by name or label), else None: a dataset label that means
    something else (a gold answer, a category) leaves the type to be inferred."""
    try:
        return spec.response_type(label).name if isinstance(label, str) else None
    except KeyError:
        return None


def p_ideal(detail: dict) -> float:
    """P(best class of the item's response type) from ``RuleBasedReward.details`` (classes are listed
    best first): a score in [0, 1], e.g. for OpenRLHF's ``scores``."""
    return next(iter(detail["classes"].values()))


def sample_log_names(spec: RuleSpec) -> list[str]:
    """The keys ``sample_logs`` gives for every item of ``spec``."""
    return ([f"rbr/{p}" for p in spec.feature_names[:len(spec.propositions)]]
            + ["rbr/type_confidence", "rbr/zero_shot_share", "rbr/served_share"])


def sample_logs(detail: dict) -> dict[str, float]:
    """Per-item numbers a trainer logs beside the reward: every proposition's P(yes)
    (``rbr/<proposition>``), how sure the response type is (``rbr/type_confidence``, 1.0 when given)
    and how the grader answered the propositions (``answer_shares``). The same
    keys for every item of a spec."""
    return {**{f"rbr/{k}": v for k, v in detail["propositions"].items()},
            "rbr/type_confidence": detail["response_type_confidence"],
            **answer_shares(detail)}


REASONING = ("strip", "keep")  # what the adapters do with a completion's reasoning (``answer_only``)
_ANY_OPEN = re.compile(r"<(think|thinking|reasoning)>", re.I)
_OPEN = re.compile(r"\s*" + _ANY_OPEN.pattern, re.I)  # at the start
_CLOSE = re.compile(r"</(think|thinking|reasoning)>", re.I)
_REASONING_PARTS = {"thinking", "reasoning", "redacted_thinking"}  # list-of-parts content types


def check_reasoning(value: Any, where: str = "reasoning") -> str:
    """``value`` when it is one of ``REASONING``; else ``ValueError`` naming ``where``."""
    if value not in REASONING:
        raise ValueError(f"{where} must be 'strip' (grade the answer only) or 'keep' (grade reasoning too), "
                         f"got {value!r}")
    return value


def answer_text(text: str) -> str:
    """``text`` without its leading reasoning: every leading ``<think>``/``<thinking>``/``<reasoning>``
    block (tags in any case), or, when the text opens with no tag but closes one (the chat template
    opened the block in the prompt, as DeepSeek-R1's and Qwen3's do), everything up to that close.
    An unclosed leading block is all reasoning (generation stopped before an answer): ``""``.
    Text without a leading block is returned unchanged."""
    stripped = False
    while True:
        m = _OPEN.match(text)
        if m is None:
            break
        close = re.compile(f"</{m.group(1)}>", re.I).search(text, m.end())
        if close is None:
            return ""
        text, stripped = text[close.end():], True
    if not stripped and (close := _CLOSE.search(text)) is not None and not _ANY_OPEN.search(text, 0, close.start()):
        text, stripped = text[close.end():], True
    return text.lstrip() if stripped else text


def _answer_message(m: Any) -> Any:
    if not isinstance(m, Mapping) or m.get("role") != "assistant":
        return m
    c = m.get("content")
    if isinstance(c, str):
        c = answer_text(c)
    elif isinstance(c, Sequence) and not isinstance(c, (bytes, bytearray)):
        parts = [p for p in c if not (isinstance(p, Mapping) and p.get("type") in _REASONING_PARTS)]
        c = [({**p, "text": answer_text(p["text"])} if isinstance(p, Mapping) and isinstance(p.get("text"), str)
              else answer_text(p) if isinstance(p, str) else p) for p in parts]
    return {**m, "content": c} if "content" in m else m


def answer_only(completion: Any) -> Any:
    """What the grader judges of a completion by default: a string through ``answer_text``; in a
    message list, each assistant message's content likewise (reasoning parts of list-of-parts
    content, ``{"type": "thinking" | "reasoning" | "redacted_thinking"}``, are dropped; tool calls,
    tool messages and a ``reasoning_content`` field, which the grader never reads, are kept as they
    are). Anything else is returned unchanged, for the item check to name."""
    if isinstance(completion, str):
        return answer_text(completion)
    if isinstance(completion, Sequence) and not isinstance(completion, (bytes, bytearray)):
        return [_answer_message(m) for m in completion]
    return completion
