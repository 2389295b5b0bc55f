"""The RBR reward as an OpenRLHF reward function file (``--reward.remote_url`` pointing at this
file's path, OpenRLHF's "reward_func" convention).

OpenRLHF calls ``reward_func(queries, prompts, labels, **kwargs)`` with the full texts (prompt +
response), the prompt texts and the dataset labels; the response is the query with its prompt
removed. A label that names a response type (e.g. ``hard_refuse``, ``Comply``) is used as such;
otherwise the type is inferred from the prompt. Returns ``{"rewards", "scores", "extra_logs"}``
with rewards as float tensors and per-proposition mean probabilities in ``extra_logs``.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from .trl import RBRReward, proposition_means

_reward = RBRReward()


def configure(reward: RBRReward) -> None:
    global _reward
    _reward = reward


def query_items(queries: Sequence[str], prompts: Sequence[str], labels: Optional[Sequence[Any]], spec) -> list[tuple]:
    """(prompt, response, response type or None) per query: the response is the query without its
    prompt; a label that names a response type of ``spec`` is used as such."""
    labels = labels if labels is not None else [None] * len(queries)

    def as_type(x):
        try:
            return spec.response_type(x).name if isinstance(x, str) else None
        except KeyError:
            return None  # a label that means something else: the type is inferred
    return [(p, q[len(p):] if q.startswith(p) else q, as_type(x)) for q, p, x in zip(queries, prompts, labels)]


def reward_func(queries: Sequence[str], prompts: Sequence[str], labels: Optional[Sequence[Any]] = None,
                **kwargs: Any) -> dict:
    details = _reward.score_items(query_items(queries, prompts, labels, _reward.reward.spec))
    rewards = torch.tensor([d["reward"] for d in details], dtype=torch.float32)
    logs = {k: torch.tensor(v) for k, v in proposition_means(details).items()}
    return {"rewards": rewards, "scores": rewards.clone(), "extra_logs": logs}
