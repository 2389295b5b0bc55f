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

import json
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


REPLY_HEADER = "\n\nFinal assistant reply to judge:\n"
_ROLES = {"user": "User", "assistant": "Assistant", "system": "System", "tool": "Tool"}


def clean(text: str) -> str:
    """``text`` with unpaired UTF-16 surrogates (a JSON ``"\\ud800"``) replaced by U+FFFD: tokenizers
    reject them, and one bad character must not fail a whole batch."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _content(m: Mapping, where: str) -> str:
    """A message's text: string content, or the text parts of list-of-parts (multimodal) content with
    other parts as ``[type]``; tool calls follow as ``[tool call] name(arguments)``."""
    c, calls = m.get("content"), m.get("tool_calls") or []
    parts = []
    if isinstance(c, str):
        parts.append(c)
    elif isinstance(c, Sequence) and not isinstance(c, (bytes, bytearray)):
        for p in c:
            if isinstance(p, str):
                parts.append(p)
            elif isinstance(p, Mapping):
                parts.append(p["text"] if isinstance(p.get("text"), str) else f"[{p.get('type', 'part')}]")
            else:
                raise TypeError(f"{where}: a content part must be a string or a {{'type', ...}} object")
    elif c is not None or not calls:
        raise TypeError(f"{where} has no string 'content'")
    if not isinstance(calls, Sequence) or isinstance(calls, str):
        raise TypeError(f"{where}: 'tool_calls' must be a list")
    for call in calls:
        fn = call.get("function", call) if isinstance(call, Mapping) else None
        if not isinstance(fn, Mapping):
            raise TypeError(f"{where}: a tool call must be an object with a name and arguments")
        args = fn.get("arguments", "")
        args = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False, sort_keys=True)
        parts.append(f"[tool call] {fn.get('name', '?')}({args})")
    return clean("\n".join(parts))


def _messages(name: str, x, i: int) -> list[tuple[str, str]]:
    """(role, text) of a message list, or of a plain string (as one message of ``role None``)."""
    if isinstance(x, str):
        return [(None, clean(x))]
    if isinstance(x, Sequence) and all(isinstance(m, Mapping) for m in x):
        return [(str(m.get("role", "user")), _content(m, f"{name}[{i}]: message {j}")) for j, m in enumerate(x)]
    raise TypeError(f"{name}[{i}] must be a string or a list of {{'role', 'content'}} messages, "
                    f"got {type(x).__name__}")


def _turns(conversation: Conversation, i: int) -> list[str]:
    return [f"{_ROLES.get(role, str(role).capitalize()) if role else 'User'}: {text}"
            for role, text in _messages("conversations", conversation, i)]


def transcript_parts(conversation: Conversation, completion: Optional[Completion], i: int = 0) -> tuple[str, Optional[str]]:
    """(the conversation so far, the reply to judge or None): the two texts the grader reads, encoded
    one after the other with ``REPLY_HEADER`` between them."""
    conv = "Conversation:\n" + "\n\n".join(_turns(conversation, i))
    if completion is None:
        return conv, None
    reply = "\n".join(text if role in (None, "assistant") else f"{_ROLES.get(role, str(role).capitalize())}: {text}"
                      for role, text in _messages("completions", completion, i))
    return conv, reply


def transcript(conversation: Conversation, completion: Optional[Completion], i: int = 0) -> str:
    """The text the grader reads: the conversation so far, then the reply to judge (none for
    questions about the request)."""
    conv, reply = transcript_parts(conversation, completion, i)
    return conv if reply is None else conv + REPLY_HEADER + reply


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

    def body(self, conversation: Conversation, completion: Optional[Completion], i: int = 0) -> tuple[list[int], int, int]:
        """(transcript ids, conversation tokens, reply tokens): the conversation, ``REPLY_HEADER`` and the
        reply are encoded apart, so that the reply's tokens are known exactly (the heads pool them).
        Without a completion (questions about the request), the last turn is encoded apart and stands
        in for the reply: the request heads pool the request itself beside the whole conversation."""
        conv, reply = transcript_parts(conversation, completion, i)
        if reply is None:
            turns = _turns(conversation, i)
            last = self.encode(turns[-1]) if turns else []
            ids = self.encode("Conversation:\n" + "".join(t + "\n\n" for t in turns[:-1])) + last
            return ids, len(ids), len(last)
        ids = self.encode(conv)
        n_conv = len(ids)
        reply_ids = self.encode(reply)
        return ids + self.encode(REPLY_HEADER) + reply_ids, n_conv, len(reply_ids)

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
