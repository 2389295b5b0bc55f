"""Checking one item (prompt, completion, response type) before it joins a shared grader batch, so
that a malformed item fails its own call with a message naming it, never the batch it would join."""
from __future__ import annotations

import re
from typing import Any, Optional

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


def sample_logs(detail: dict) -> dict[str, float]:
    """Per-item numbers a trainer logs beside the reward: every proposition's P(yes)
    (``rbr/<proposition>``), how sure the response type is (``rbr/type_confidence``, 1.0 when given)
    and how the grader answered the propositions (``answer_shares``). The same
    keys for every item of a spec."""
    return {**{f"rbr/{k}": v for k, v in detail["propositions"].items()},
            "rbr/type_confidence": detail["response_type_confidence"],
            **answer_shares(detail)}
