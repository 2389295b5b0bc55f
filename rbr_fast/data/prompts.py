"""Prompts for PPO: where they come from, the held-out split, and a resumable sharded order.

The order is a pure function of (seed, step): epoch e visits the training prompts in
``randperm(seed + e)`` order, step s takes global positions ``[s*G, (s+1)*G)`` with G = batch size x
processes, and process r takes its contiguous slice. Resuming needs only the step number.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from .readers import RESPONSE_TYPE, iter_rows, xstest_prompts
from ..errors import UserError


@dataclass(frozen=True)
class Prompt:
    prompt: Any  # a string or chat messages
    response_type: Optional[str] = None
    label: Optional[str] = None  # XSTest: safe | unsafe (for the refusal metrics)
    xstest_id: Optional[str] = None  # the XSTest prompt id, for XSTest prompts


def load_prompts(source: str, eval_n: int, seed: int = 0) -> tuple[list[Prompt], list[Prompt]]:
    """(train, held-out) prompts: ``"xstest"`` or a jsonl file (``prompt``, optional ``response_type``).
    The held-out ``eval_n`` are a seeded sample (XSTest: safe and unsafe in the data's proportion)."""
    if source == "xstest":
        rows = xstest_prompts()
        items = [_xstest_prompt(k, r) for k, r in sorted(rows.items(), key=_num)]
    else:
        items = []
        for where, row in iter_rows(Path(source)):
            if "prompt" not in row:
                raise UserError(f"{where}: a prompt row needs a 'prompt' field")
            rt = row.get("response_type")
            if rt is not None and not isinstance(rt, str):
                raise UserError(f"{where}: 'response_type' must be a string")
            items.append(Prompt(row["prompt"], rt))
    if not items:
        raise UserError(f"{source}: no prompts")
    if eval_n >= len(items):
        raise UserError(f"ppo config: eval_prompts={eval_n} leaves no training prompts out of {len(items)} in {source}")
    rng = random.Random(seed)
    held = set()
    for group in _groups(items):  # stratified by label when there is one
        held.update(rng.sample(group, round(eval_n * len(group) / len(items))))
    extra = [i for i in range(len(items)) if i not in held]
    while len(held) < eval_n:
        held.add(extra.pop(rng.randrange(len(extra))))
    train = [p for i, p in enumerate(items) if i not in held]
    return train, [items[i] for i in sorted(held)][:eval_n]


def _num(kv):
    k = kv[0]
    return (0, int(k), "") if k.isdigit() else (1, 0, k)


def _groups(items: list[Prompt]) -> list[list[int]]:
    by: dict = {}
    for i, p in enumerate(items):
        by.setdefault(p.label, []).append(i)
    return list(by.values())


class PromptOrder:
    """The prompts of one process at each step (see the module docstring)."""

    def __init__(self, prompts: list[Prompt], batch_size: int, rank: int = 0, world: int = 1, seed: int = 0):
        if len(prompts) < batch_size * world:
            raise UserError(f"{len(prompts)} training prompts are fewer than one step's batch "
                            f"({batch_size} x {world} processes)")
        self.prompts, self.batch_size, self.rank, self.world, self.seed = prompts, batch_size, rank, world, seed
        self._perm: dict[int, list[int]] = {}

    def _index(self, pos: int) -> int:
        epoch, i = divmod(pos, len(self.prompts))
        if epoch not in self._perm:
            g = torch.Generator().manual_seed(self.seed + epoch)
            self._perm = {epoch: torch.randperm(len(self.prompts), generator=g).tolist()}
        return self._perm[epoch][i]

    def batch(self, step: int) -> list[Prompt]:
        start = (step * self.world + self.rank) * self.batch_size
        return [self.prompts[self._index(p)] for p in range(start, start + self.batch_size)]


# The experiment's fixed XSTest split (independent of any run's seed, so every arm and seed sees the
# same prompts): SFT targets come from ``sft``, PPO samples ``ppo``, and ``eval`` is never trained on.
SPLIT_SEED = 2024
SPLIT_SIZES = {"eval": 48, "sft": 96}


def xstest_split() -> dict[str, list[Prompt]]:
    """``{"sft", "ppo", "eval"}`` lists of XSTest prompts (disjoint, safe/unsafe in the data's proportion
    in each; ``Prompt.label`` is safe | unsafe, ``Prompt.xstest_id`` the XSTest id);
    the lists are in XSTest id order."""
    rows = xstest_prompts()
    ids = sorted(rows, key=lambda k: _num((k, None)))
    rng = random.Random(SPLIT_SEED)
    by_label: dict = {}
    for i in ids:
        by_label.setdefault(rows[i]["label"] == "safe", []).append(i)
    taken: dict[str, set] = {}
    for part, n in SPLIT_SIZES.items():
        taken[part] = set()
        for group in by_label.values():
            pool = [i for i in group if not any(i in t for t in taken.values())]
            taken[part].update(rng.sample(pool, round(n * len(group) / len(ids))))
    taken["ppo"] = set(ids) - set().union(*taken.values())
    return {part: [_xstest_prompt(i, rows[i]) for i in ids if i in taken[part]] for part in ("sft", "ppo", "eval")}


def _xstest_prompt(xstest_id: str, row: dict) -> Prompt:
    """An XSTest row as a prompt: label safe, or unsafe for any other XSTest label, and its response type."""
    label = "safe" if row["label"] == "safe" else "unsafe"
    return Prompt(row["prompt"], RESPONSE_TYPE[label], label, xstest_id=xstest_id)
