"""How a grading prompt is laid out, as token ids.

Every prompt is three pieces, tokenised separately and concatenated, so that the shared-prefix
layout and a one-prompt-per-question layout see exactly the same ids:

    head       chat-template start + the grader's instructions + the opening of the user turn
               (the same for every prompt)
    transcript the conversation and the reply to judge (one per completion)
    tail       one proposition's question (+ optional few-shot examples) + the template's end of
               turn and start of the assistant turn (one per proposition)

The answer is read from the next-token distribution at the last id of the tail.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence, Union

from ..rules import Proposition

Message = Mapping[str, str]
Conversation = Union[str, Sequence[Message]]
Completion = Union[str, Sequence[Message]]

INSTRUCTIONS = ("You are a careful grader. You read a conversation between a user and an AI assistant, then "
                "one question about the assistant's final reply. Answer the question about that reply only, "
                "with one word: yes or no.")
PROMPT_INSTRUCTIONS = ("You are a careful grader. You read a conversation between a user and an AI assistant, "
                       "then one question about what the user asks for in their last message. Answer with one "
                       "word: yes or no.")
_SPLIT = "\x00rbr-split\x00"
ANSWER_WORDS = {"yes": ("yes", "Yes", "YES"), "no": ("no", "No", "NO")}


def _text(name: str, x, i: int) -> str:
    """The text of a message list (roles kept) or a plain string."""
    if isinstance(x, str):
        return x
    if isinstance(x, Sequence) and all(isinstance(m, Mapping) for m in x):
        bad = [j for j, m in enumerate(x) if not isinstance(m.get("content"), str)]
        if bad:
            raise TypeError(f"{name}[{i}]: message {bad[0]} has no string 'content'")
        return "\n".join(m["content"] for m in x)
    raise TypeError(f"{name}[{i}] must be a string or a list of {{'role', 'content'}} messages, "
                    f"got {type(x).__name__}")


def transcript(conversation: Conversation, completion: Optional[Completion], i: int = 0) -> str:
    """The text the grader reads: the conversation so far, then the reply to judge (none for
    questions about the request)."""
    if isinstance(conversation, str):
        turns = [f"User: {conversation}"]
    else:
        _text("conversations", conversation, i)  # type check with the item's index
        turns = [f"{'User' if m.get('role') == 'user' else str(m.get('role', 'user')).capitalize()}: {m['content']}"
                 for m in conversation]
    text = "Conversation:\n" + "\n\n".join(turns)
    if completion is None:
        return text
    return text + "\n\nFinal assistant reply to judge:\n" + _text("completions", completion, i)


def question_text(prop: Proposition, few_shot: bool) -> str:
    """The tail's text before the template's end of turn."""
    parts = ["\n\n"]
    if few_shot and prop.examples:
        parts.append("Examples of how to answer:\n")
        parts += [f"Text: {e.completion}\nAnswer: {'yes' if e.answer else 'no'}\n" for e in prop.examples]
        parts.append("\n")
    parts.append(f"Question: {prop.question}")
    return "".join(parts)


@dataclass
class PromptLayout:
    """Token ids of the three pieces for one tokenizer; see the module docstring."""
    head: list[int]
    template_end: str  # text after the user turn, ending where the answer starts
    yes_ids: list[int]
    no_ids: list[int]
    tokenizer: object
    few_shot: bool

    @classmethod
    def for_tokenizer(cls, tokenizer, few_shot: bool = False, instructions: str = INSTRUCTIONS) -> "PromptLayout":
        if getattr(tokenizer, "chat_template", None):
            msgs = [{"role": "system", "content": instructions}, {"role": "user", "content": _SPLIT}]
            rendered = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            if rendered.count(_SPLIT) != 1:
                raise ValueError("the tokenizer's chat template does not keep the user message verbatim")
            head_text, end = rendered.split(_SPLIT)
        else:  # a base model: plain text
            head_text, end = instructions + "\n\n", "\nAnswer:"
        head = tokenizer(head_text, add_special_tokens=False)["input_ids"]
        bos = getattr(tokenizer, "bos_token_id", None)
        # add the BOS token the model was trained with, unless the template already starts with it
        if bos is not None and getattr(tokenizer, "add_bos_token", False) and head[:1] != [bos]:
            head = [bos] + head
        yes, no = answer_ids(tokenizer, "yes"), answer_ids(tokenizer, "no")
        return cls(head, end, yes, no, tokenizer, few_shot)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def tail(self, prop: Proposition) -> list[int]:
        return self.encode(question_text(prop, self.few_shot) + self.template_end)


def answer_ids(tokenizer, word: str) -> list[int]:
    """Ids of every casing/leading-space variant of ``word`` that is a single token."""
    ids = []
    for w in ANSWER_WORDS[word]:
        for text in (w, " " + w):
            t = tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(t) == 1 and t[0] not in ids:
                ids.append(t[0])
    if not ids:
        raise ValueError(f"the tokenizer has no single-token spelling of {word!r}; the grader cannot read a "
                         "yes/no answer from one next-token distribution")
    return ids
