"""Data-adaptive rule selection (after Li et al. 2025, "RuleAdapter"): for two responses to one
prompt, use only the k propositions on which they differ most, and prefer the response that does
better on those. Each proposition's sign for a response type comes from the spec: +1 when the
type's ideal class wants it true (or the disallowed class wants it false), -1 when the ideal class
wants it false (or the disallowed class needs it true), 0 (irrelevant, never selected) otherwise.

The same idea groupwise (GRPO): per group of completions of one prompt, the k propositions with the
largest spread across the group score every member.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..rules import RuleSpec

MODES = ("adaptive", "all", "random")


def _signs(spec: RuleSpec, lits, sign: int, out: dict) -> None:
    # a negated conjunction says nothing definite about each of its parts: it is skipped
    for x in spec.expand(lits):
        if x.name in spec.propositions:
            out.setdefault(x.name, sign if x.positive else -sign)


def directions(spec: RuleSpec, response_type: str) -> torch.Tensor:
    """``[P]`` float: +1 / -1 / 0 per proposition for ``response_type`` (see the module docstring)."""
    t = spec.response_type(response_type)
    sign: dict[str, int] = {}
    by_name = {c.name: c for c in t.classes}
    if "ideal" in by_name:
        _signs(spec, by_name["ideal"].literals, +1, sign)
    if "disallowed_completion" in by_name:
        _signs(spec, by_name["disallowed_completion"].literals, -1, sign)
    return torch.tensor([float(sign.get(n, 0)) for n in spec.proposition_names])


def select(p_a: torch.Tensor, p_b: torch.Tensor, direction: torch.Tensor, k: int, mode: str = "adaptive",
           relevance: Optional[torch.Tensor] = None, alpha: float = 0.0,
           generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """``[N, P]`` bool: the rules used for each pair. ``adaptive``: the k relevant rules with the
    largest ``|p_a - p_b| + alpha * relevance``; ``all``: every relevant rule; ``random``: k
    relevant rules at random."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if p_a.shape != p_b.shape or p_a.dim() != 2 or direction.shape != (p_a.shape[1],):
        raise ValueError(f"p_a {tuple(p_a.shape)}, p_b {tuple(p_b.shape)} and direction {tuple(direction.shape)} "
                         "must be [N, P], [N, P] and [P]")
    relevant = (direction != 0).expand_as(p_a)
    if mode == "all":
        return relevant.clone()
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if mode == "random":
        key = torch.rand(p_a.shape, generator=generator)
    else:
        key = (p_a - p_b).abs().float() + (alpha * relevance.float() if relevance is not None else 0.0)
    key = torch.where(relevant, key, torch.tensor(-1.0))
    top = key.topk(min(k, p_a.shape[1]), dim=1).indices
    out = torch.zeros_like(relevant)
    out.scatter_(1, top, True)
    return out & relevant


def prefer_a(p_a: torch.Tensor, p_b: torch.Tensor, direction: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """``[N]`` float: 1 when A does better on the chosen rules, 0 when B does, 0.5 on a tie."""
    margin = ((p_a - p_b) * direction * chosen).sum(1)
    return (margin > 0).float() + 0.5 * (margin == 0).float()


def group_scores(p: torch.Tensor, direction: torch.Tensor, k: int) -> torch.Tensor:
    """``[G]`` scores of one group of completions of a prompt: the mean signed probability over the
    k relevant rules whose probabilities spread most across the group."""
    relevant = int((direction != 0).sum())
    if relevant == 0 or k < 1:
        raise ValueError(f"group_scores: need k >= 1 and a response type with relevant rules (k={k}, {relevant} relevant)")
    spread = (p.max(0).values - p.min(0).values).float()
    spread = torch.where(direction != 0, spread, torch.tensor(-1.0))
    top = spread.topk(min(k, relevant)).indices
    return (p[:, top] * direction[top]).mean(1)


def relabel(grader, rows: list[dict], k: int = 3, mode: str = "adaptive", seed: int = 0) -> list[dict]:
    """Preference labels for response pairs (``prompt``, ``completion_a``, ``completion_b``, optional
    ``response_type``, inferred from the prompt when any row lacks it): each row comes back with its
    ``response_type``, ``preferred`` ("a", "b" or "tie") and the ``rules`` that decided it."""
    spec = grader.spec
    prompts = [r["prompt"] for r in rows]
    types = ([r["response_type"] for r in rows] if all("response_type" in r for r in rows)
             else spec.infer_types(grader.grade_prompts(prompts).p_yes))
    both = grader.grade(prompts * 2, [r["completion_a"] for r in rows] + [r["completion_b"] for r in rows])
    pa, pb = both.p_yes[:len(rows)], both.p_yes[len(rows):]
    dirs = torch.stack([directions(spec, t) for t in types])
    gen = torch.Generator().manual_seed(seed)
    names = spec.proposition_names
    out = []
    for i, r in enumerate(rows):
        chosen = select(pa[i:i + 1], pb[i:i + 1], dirs[i], k, mode, generator=gen)
        pref = float(prefer_a(pa[i:i + 1], pb[i:i + 1], dirs[i], chosen))
        out.append({**r, "response_type": spec.response_type(types[i]).name,
                    "preferred": "a" if pref == 1 else "b" if pref == 0 else "tie",
                    "rules": [n for n, c in zip(names, chosen[0].tolist()) if c]})
    return out
