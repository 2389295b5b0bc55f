"""Fitting RBR weights on ranked comparisons (RBR paper, section 4): for completions of the same
prompt, every better/worse pair adds ``relu(margin - (R_better - R_worse))`` with
``R = rm_score + w[type] . features``; full-batch AdamW, one weight row per response type. The
bias cancels inside a pair (same prompt, same type), so it is not fitted."""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch

from ..grading.grade_cache import grade_cached
from ..ops import rbr_reward_from_props
from .weights import RewardWeights


def ranked_pairs(groups: Sequence, ranks: Sequence[int], margin: float = 1.0,
                 per_rank: Optional[float] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(pairs [M, 2] of (better, worse) row indices, margins [M] float) over rows of the same group
    (prompt) whose ranks differ (lower rank = better). ``per_rank`` adds that much margin per rank
    step between the two (the margin is a float; nothing is rounded)."""
    by_group: dict = {}
    for i, gid in enumerate(groups):
        by_group.setdefault(gid, []).append(i)
    pairs, margins = [], []
    for rows in by_group.values():
        for a in rows:
            for b in rows:
                if ranks[a] < ranks[b]:
                    pairs.append((a, b))
                    margins.append(margin + (per_rank or 0.0) * (ranks[b] - ranks[a] - 1))
    return (torch.tensor(pairs, dtype=torch.int64).reshape(-1, 2), torch.tensor(margins, dtype=torch.float32))


def split_by_group(groups: Sequence, val_fraction: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean masks (train, val) over rows: whole groups go to one side, never both."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    uniq = sorted(set(groups), key=str)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(uniq), generator=g).tolist()
    n_val = int(round(val_fraction * len(uniq)))
    val_groups = {uniq[i] for i in order[:n_val]}
    val = torch.tensor([gid in val_groups for gid in groups], dtype=torch.bool)
    return ~val, val


@dataclass
class FitResult:
    weights: torch.Tensor  # [K, F]
    train: dict  # pair_accuracy, hinge, pairs
    val: dict
    history: list = field(default_factory=list)  # (step, train hinge)


def pair_accuracy(reward: torch.Tensor, pairs: torch.Tensor) -> float:
    """Share of (better, worse) pairs the reward orders correctly; a tie counts half."""
    if pairs.shape[0] == 0:
        return math.nan
    d = reward[pairs[:, 0]] - reward[pairs[:, 1]]
    return float(((d > 0).double() + 0.5 * (d == 0).double()).mean())


def _evaluate(R: torch.Tensor, pairs: torch.Tensor, margins: torch.Tensor) -> dict:
    if pairs.shape[0] == 0:
        return {"pairs": 0, "pair_accuracy": math.nan, "hinge": math.nan}
    d = R[pairs[:, 0]] - R[pairs[:, 1]]
    return {"pairs": int(pairs.shape[0]), "pair_accuracy": pair_accuracy(R, pairs),
            "hinge": float(torch.relu(margins - d).mean())}


def fit_weights(features: torch.Tensor, response_type: torch.Tensor, pairs: torch.Tensor,
                margins: Optional[torch.Tensor] = None, rm_scores: Optional[torch.Tensor] = None,
                num_types: Optional[int] = None, groups: Optional[Sequence] = None, val_fraction: float = 0.0,
                init: Optional[torch.Tensor] = None, anchor: float = 0.0, steps: int = 400, lr: float = 0.05,
                weight_decay: float = 1e-3, seed: int = 0) -> FitResult:
    """Fit ``[K, F]`` weights with the pairwise hinge loss.

    Args:
        features: ``[N, F]`` per completion (e.g. ``ops.rbr_reward_from_props(...).features``).
        response_type: ``[N]`` in ``[0, K)``. pairs: ``[M, 2]`` (better, worse) row indices.
        margins: ``[M]`` per-pair margins (default 1). rm_scores: ``[N]`` helpful-only RM scores
            added to R (the weights then learn what the RM misses); default none.
        groups: per-row prompt ids; with ``val_fraction`` > 0 whole prompts are held out and pairs
            crossing the split are dropped. init: starting weights (default zeros).
        anchor: strength of an L2 pull toward ``init`` (``anchor * ||w - init||^2`` added to the
            mean hinge): with the hand-set weights as ``init``, a prior that the fit departs from
            only where the pairs insist (on XSTest it generalises to an unseen model's completions
            far better than a free fit: docs/benchmarks.md, "RBR reward on XSTest").
    Returns: ``FitResult`` with the weights and pair accuracy / hinge on train and validation.
    """
    x = features.double()
    N, F = x.shape
    if N == 0:
        raise ValueError("fit_weights: no completions")
    rt = response_type.long()
    K = num_types if num_types is not None else int(rt.max()) + 1
    if int(rt.min()) < 0 or int(rt.max()) >= K:
        raise ValueError(f"fit_weights: response_type must be in [0, {K})")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("fit_weights: features contain NaN or inf")
    pairs = pairs.long().reshape(-1, 2)
    if pairs.numel() and (int(pairs.min()) < 0 or int(pairs.max()) >= N):
        raise ValueError(f"fit_weights: pair indices must be in [0, {N})")
    margins = torch.ones(pairs.shape[0]) if margins is None else margins.float()
    if margins.shape != (pairs.shape[0],):
        raise ValueError(f"fit_weights: margins must have shape ({pairs.shape[0]},), got {tuple(margins.shape)}")
    rm = torch.zeros(N, dtype=torch.float64) if rm_scores is None else rm_scores.double()
    if rm.shape != (N,) or not bool(torch.isfinite(rm).all()):
        raise ValueError(f"fit_weights: rm_scores must be {N} finite numbers")
    if groups is not None and val_fraction > 0:
        if len(groups) != N:
            raise ValueError(f"fit_weights: groups has {len(groups)} entries for {N} completions")
        train_rows, _ = split_by_group(groups, val_fraction, seed)
    else:
        train_rows = torch.ones(N, dtype=torch.bool)
    in_train = train_rows[pairs[:, 0]] & train_rows[pairs[:, 1]]
    in_val = ~train_rows[pairs[:, 0]] & ~train_rows[pairs[:, 1]]
    tp, tm = pairs[in_train], margins[in_train].double()
    # float32 steps (the pair matrix is the only sizeable tensor); metrics in float64
    if not (isinstance(anchor, (int, float)) and math.isfinite(anchor) and anchor >= 0):
        raise ValueError(f"fit_weights: anchor must be a finite number >= 0, got {anchor!r}")
    w0 = init.float().clone() if init is not None else torch.zeros(K, F)
    if w0.shape != (K, F):
        raise ValueError(f"fit_weights: init must have shape ({K}, {F}), got {tuple(w0.shape)}")
    w = w0.clone().requires_grad_(True)
    opt = torch.optim.AdamW([w], lr=lr, weight_decay=weight_decay)
    # R_better - R_worse is linear in the flattened weights: with x placed in its type's block of a
    # [K * F] row, the pair differences form one [M, K * F] matrix built once, and each step is
    # a mat-vec (no per-step gather/scatter over rows)
    def placed(rows):
        out = torch.zeros(rows.numel(), K, F)
        out[torch.arange(rows.numel()), rt[rows]] = x[rows].float()
        return out.view(rows.numel(), K * F)
    D = placed(tp[:, 0]) - placed(tp[:, 1])
    need = (tm - (rm[tp[:, 0]] - rm[tp[:, 1]])).float()  # margin left for the weights to cover
    history = []
    for step in range(steps if tp.shape[0] else 0):
        loss = torch.relu(need - D @ w.view(-1)).mean()
        if anchor:
            loss = loss + anchor * (w - w0).pow(2).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            history.append((step, loss.item()))
    w = w.detach()
    R = rm + (x * w.double()[rt]).sum(1)
    return FitResult(w, _evaluate(R, tp, tm), _evaluate(R, pairs[in_val], margins[in_val].double()), history)


def fit_comparisons(grader, rows: list[dict], ranks: Sequence[int], grades_cache, *, margin: float = 1.0,
                    val_fraction: float = 0.2, anchor: float = 0.0, seed: int = 0) -> tuple[RewardWeights, FitResult]:
    """(RewardWeights, FitResult) fitted on comparison rows (``prompt``, ``completion``,
    ``response_type``, optional ``prompt_id``) ranked per prompt (0 = best), starting from and pulled
    toward (``anchor``) the spec's hand-set weights. Grades are cached in ``grades_cache`` by content,
    so an edited data file never reuses stale grades."""
    spec = grader.spec
    types = [spec.response_type(r["response_type"]) for r in rows]
    groups = [str(r.get("prompt_id", r["prompt"])) for r in rows]
    keys = [hashlib.sha1(json.dumps([r["prompt"], r["completion"]]).encode()).hexdigest() for r in rows]
    grades = grade_cached(grader, keys, [r["prompt"] for r in rows], [r["completion"] for r in rows], grades_cache)
    rt = torch.tensor([spec.type_index(t.name) for t in types])
    hand = RewardWeights.hand_set(spec)
    feats = rbr_reward_from_props(grades.p_yes, spec.conjunctions(), hand.weights, rt).features
    pairs, margins = ranked_pairs(groups, ranks, margin=margin)
    res = fit_weights(feats, rt, pairs, margins, num_types=len(spec.response_types), groups=groups,
                      val_fraction=val_fraction, init=hand.weights, anchor=anchor, seed=seed)
    return RewardWeights(hand.spec_fingerprint, hand.feature_names, hand.response_types, res.weights, hand.bias,
                         hand.spec_structure), res
