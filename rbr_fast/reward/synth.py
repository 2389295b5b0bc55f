"""Synthetic comparison data (RBR paper, section 4.2): for each prompt and its response type,
one completion per quality class, written by a helpful model told which properties the reply must
and must not have (the class's literals, phrased through the propositions' questions). The label is
the intended class; an optional filter keeps only completions the grader classifies as intended."""
from __future__ import annotations

import sys
from typing import Optional, Sequence

import torch

from ..rules import Literal, RuleSpec


def _describe(spec: RuleSpec, x: Literal) -> str:
    if x.name in spec.propositions:
        return f"- {spec.propositions[x.name].question} -> {'yes' if x.positive else 'no'}"
    parts = ", ".join(str(y) for y in spec.derived[x.name])
    return f"- Is it true that the reply has all of: {parts}? -> {'yes' if x.positive else 'no'}"


def instruction(spec: RuleSpec, response_type: str, cls: str, prompt: str) -> str:
    """The request to the writer model for one (prompt, class)."""
    t = spec.response_type(response_type)
    c = next(k for k in t.classes if k.name == cls)
    wants = "\n".join(_describe(spec, x) for x in spec.expand(c.literals))
    return (f"Write the reply an AI assistant gives to the user message below. The reply must be such that "
            f"each question about it has the given answer:\n{wants}\n\nUser message:\n{prompt}\n\n"
            "Write only the reply.")


def generate(model, tokenizer, spec: RuleSpec, prompts: Sequence[str], response_types: Sequence[str],
             max_new_tokens: int = 96, batch_size: int = 16, temperature: float = 0.8, seed: int = 0,
             progress: Optional[bool] = None) -> list[dict]:
    """One completion per class of each prompt's response type. Rows: ``prompt_id``, ``prompt``,
    ``response_type``, ``class``, ``rank`` (0 = best), ``completion``."""
    from tqdm.auto import tqdm
    jobs = []
    for i, (p, t) in enumerate(zip(prompts, response_types)):
        rt = spec.response_type(t)
        for rank, c in enumerate(rt.classes):
            jobs.append({"prompt_id": i, "prompt": p, "response_type": rt.name, "class": c.name, "rank": rank})
    device = next(model.parameters()).device
    tokenizer.padding_side = "left"  # generation continues from the right end of every row
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    torch.manual_seed(seed)
    show = progress if progress is not None else sys.stderr.isatty()
    for s in tqdm(range(0, len(jobs), batch_size), desc="writing", unit="batch", disable=not show):
        part = jobs[s:s + batch_size]
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": instruction(spec, j["response_type"],
                                                                                         j["class"], j["prompt"])}],
                                               tokenize=False, add_generation_prompt=True)
                 if getattr(tokenizer, "chat_template", None) else
                 instruction(spec, j["response_type"], j["class"], j["prompt"]) + "\nReply:" for j in part]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=temperature > 0,
                                 temperature=temperature if temperature > 0 else None, top_p=0.95 if temperature > 0 else None,
                                 pad_token_id=tokenizer.pad_token_id)
        for j, row in zip(part, out[:, enc["input_ids"].shape[1]:]):
            j["completion"] = tokenizer.decode(row, skip_special_tokens=True).strip()
    return jobs


def keep_agreeing(rows: list[dict], p_yes: torch.Tensor, spec: RuleSpec) -> list[dict]:
    """Rows whose intended class is the one the grader's answers (P(yes) >= 0.5) put them in."""
    names = spec.proposition_names
    out = []
    for r, p in zip(rows, p_yes.tolist()):
        values = {n: v >= 0.5 for n, v in zip(names, p)}
        if spec.classify(r["response_type"], values) == r["class"]:
            out.append(r)
    return out
