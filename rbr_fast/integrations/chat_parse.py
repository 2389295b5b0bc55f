"""Chat-templated text back into messages.

OpenRLHF hands its reward function the prompt as rendered by the policy's chat template and the
query (prompt + response) decoded with special tokens kept, e.g. ``<|im_start|>user\\nHi<|im_end|>
\\n<|im_start|>assistant\\nHello<|im_end|>``. The grader should read the conversation as messages
and the reply without the end-of-turn / end-of-text tokens. A ``Template`` says where a turn starts
(a header naming the role) and which strings end a turn; the ChatML, Llama-3 and Gemma families are
built in and detected from the text, and ``Template.from_tokenizer`` learns the markers of any
other chat template from the policy tokenizer by rendering a probe conversation.
"""
from __future__ import annotations

import functools
import re
from typing import NamedTuple, Optional, Union


class Template(NamedTuple):
    name: str
    header: "re.Pattern[str]"  # a turn's opening; group "role" is the role as the template spells it
    ends: tuple[str, ...]  # markers that end a turn or the text (end of turn / text, padding, BOS)
    roles: dict  # the template's role spellings -> message roles (others are kept as spelled)

    def role(self, spelled: str) -> str:
        return self.roles.get(spelled, spelled)

    @classmethod
    def from_tokenizer(cls, tokenizer) -> Optional["Template"]:
        """The markers of ``tokenizer``'s chat template, learnt by rendering probe conversations
        (None for a tokenizer without a chat template: the prompt is plain text)."""
        if not getattr(tokenizer, "chat_template", None):
            return None
        s = ["\x01RBR1\x01", "\x01RBR2\x01", "\x01RBR3\x01"]

        def render(roles, gen):
            msgs = [{"role": r, "content": x} for r, x in zip(roles, s)]
            return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
        full = render(("user", "assistant", "user"), True)
        one, one_gen, pair = render(("user",), False), render(("user",), True), render(("user", "assistant"), False)
        assistant = one_gen[len(one):]  # the generation prompt opens the assistant's turn
        end_assistant = pair[pair.index(s[1]) + len(s[1]):]
        between = full[full.index(s[1]) + len(s[1]):full.index(s[2])]  # end of assistant turn + user header
        user = between[len(end_assistant):] if between.startswith(end_assistant) else between
        end_user = full[full.index(s[0]) + len(s[0]):full.index(s[1])]
        end_user = end_user[:-len(assistant)] if assistant and end_user.endswith(assistant) else end_user
        headers = {h: r for h, r in ((user, "user"), (assistant, "assistant")) if h.strip()}
        if not headers:
            return None
        try:
            sys_text = render(("system", "user"), False)
            system = sys_text[:sys_text.index(s[0])]
            bos = getattr(tokenizer, "bos_token", None)
            system = system[len(bos):] if bos and system.startswith(bos) else system
            if system.strip() and system not in headers:
                headers[system] = "system"
        except Exception:  # a template without a system role
            pass
        ends = {e.strip() for e in (end_user, end_assistant, tokenizer.eos_token, tokenizer.pad_token,
                                    getattr(tokenizer, "bos_token", None)) if e and e.strip()}
        alternatives = "|".join(re.escape(h) for h in sorted(headers, key=len, reverse=True))
        return cls("tokenizer", re.compile(f"(?P<role>{alternatives})"), tuple(sorted(ends, key=len, reverse=True)),
                   headers)


FAMILIES = (
    Template("chatml", re.compile(r"<\|im_start\|>(?P<role>[^\n<]*)\n"), ("<|im_end|>", "<|endoftext|>"), {}),
    Template("llama3", re.compile(r"<\|start_header_id\|>(?P<role>[^<]*)<\|end_header_id\|>\n\n"),
             ("<|eot_id|>", "<|eom_id|>", "<|end_of_text|>", "<|begin_of_text|>"), {"ipython": "tool"}),
    Template("gemma", re.compile(r"<start_of_turn>(?P<role>\w+)\n"), ("<end_of_turn>", "<eos>", "<bos>", "<pad>"),
             {"model": "assistant"}),
)
_ALL_ENDS = tuple(e for t in FAMILIES for e in t.ends)


def detect(text: str) -> Optional[Template]:
    """The built-in family whose turn headers occur in ``text``, else None."""
    return next((t for t in FAMILIES if t.header.search(text)), None)


def _cut(reply: str, ends: tuple[str, ...]) -> str:
    """The reply up to its first end-of-turn / end-of-text string (generation stops there; what
    follows is padding), without surrounding whitespace."""
    stop = min((i for i in (reply.find(e) for e in ends) if i >= 0), default=len(reply))
    return reply[:stop].strip()


def parse(text: str, template: Template) -> list[dict]:
    """``text`` as ``{"role", "content"}`` messages; a turn's trailing end marker is dropped, as is
    an empty assistant turn at the end (the generation prompt). Text before the first header (a
    cut-off start) is kept as a user message unless it is only markers."""
    marks = list(template.header.finditer(text))
    lead = text[:marks[0].start()] if marks else text
    for e in template.ends:
        lead = lead.replace(e, "")
    out = [{"role": "user", "content": lead.strip()}] if lead.strip() else []
    for m, nxt in zip(marks, marks[1:] + [None]):
        body = text[m.end():nxt.start() if nxt else len(text)]
        out.append({"role": template.role(m.group("role")), "content": _cut(body, template.ends)})
    if out and out[-1]["role"] == "assistant" and not out[-1]["content"]:
        out.pop()
    return out


def split_query(query: str, prompt: str, template: Optional[Template] = None) -> tuple[Union[str, list], str]:
    """(conversation, reply) of an OpenRLHF query: the conversation as messages when the text is
    chat-templated (``template``, else a built-in family detected from the text), else the plain
    prompt; the reply without its end-of-turn / end-of-text tokens. The prompt need not be an
    exact prefix of the query (a left-truncated prompt, a decode that does not round-trip): the
    reply then starts after the last assistant header."""
    template = template or detect(prompt or query)
    ends = template.ends + _ALL_ENDS if template else _ALL_ENDS
    if prompt and query.startswith(prompt):
        conv, reply = prompt, query[len(prompt):]
    elif template and (heads := [m for m in template.header.finditer(query)
                                 if template.role(m.group("role")) == "assistant"]):
        conv, reply = query[:heads[-1].start()], query[heads[-1].end():]
    elif prompt and prompt in query:
        conv, reply = prompt, query[query.rindex(prompt) + len(prompt):]
    else:
        conv, reply = prompt, query
    messages = parse(conv, template) if template else []
    return (messages or conv), _cut(reply, ends)



@functools.lru_cache(maxsize=None)
def tokenizer_template(name: str) -> Optional[Template]:
    """``Template.from_tokenizer`` of the tokenizer ``name`` (a folder or hub id), loaded once."""
    from transformers import AutoTokenizer
    return Template.from_tokenizer(AutoTokenizer.from_pretrained(name))
