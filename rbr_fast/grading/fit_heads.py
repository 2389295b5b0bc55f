"""Fitting proposition heads on pooled features: class-weighted logistic regression (or a small MLP),
grouped cross-validation, Platt calibration on held-out folds.

Everything here works on tensors in memory (``features [N, L, len(POOLINGS), H]``, labels ``[N]``
in [0, 1]), so a refit over cached features takes seconds.

Protocol for one proposition (``fit_one``):
- folds: rows of one group (a conversation, an XSTest prompt) stay in one fold; groups holding a
  positive are dealt round-robin first, so every fold gets positives;
- selection (only when there are several candidates): each candidate (inputs, L2 strength, kind)
  is scored by the AUROC of its out-of-fold logits, and the best is refitted on all rows;
- calibration: Platt scaling fitted on the chosen candidate's out-of-fold logits, never on logits
  of rows the model was fitted on;
- honest scores: the out-of-fold probabilities, calibrated by a Platt fit on the other folds'
  logits; with several candidates the whole selection runs again inside each outer fold
  (nested), so no scored row ever took part in choosing, fitting or calibrating its model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from ..metrics import auroc
from .heads import Head, select


@dataclass(frozen=True)
class Candidate:
    inputs: tuple[tuple[int, str], ...]  # (layer, pooling) slices, concatenated
    l2: float  # L2 strength per standardised input dimension
    kind: str = "linear"  # or "mlp"

    def __str__(self) -> str:
        return f"{self.kind} on {' + '.join(f'{p}@{l}' for l, p in self.inputs)}, l2={self.l2:g}"


def group_folds(groups: Sequence, positive: Sequence[bool], k: int, seed: int = 0) -> torch.Tensor:
    """Fold index (0..k-1) per row: whole groups per fold, groups with a positive spread first."""
    uniq = sorted(set(groups), key=str)
    has_pos = dict.fromkeys(uniq, False)
    for g, p in zip(groups, positive):
        has_pos[g] = has_pos[g] or bool(p)
    perm = torch.randperm(len(uniq), generator=torch.Generator().manual_seed(seed)).tolist()
    order = sorted(perm, key=lambda i: not has_pos[uniq[i]])  # stable: positives first, random within
    fold = {uniq[i]: j % k for j, i in enumerate(order)}
    return torch.tensor([fold[g] for g in groups], dtype=torch.int64)


def _class_weights(y: torch.Tensor, w: torch.Tensor) -> tuple[float, float]:
    """(positive, negative) weights giving both classes the same total weight (rows weighted by ``w``)."""
    p = float(((w * y).sum() / w.sum()).clamp(1e-3, 1 - 1e-3))
    return 0.5 / p, 0.5 / (1 - p)


def _weighted_bce(s: torch.Tensor, y: torch.Tensor, w: torch.Tensor, wp: float, wn: float) -> torch.Tensor:
    ls = torch.nn.functional.logsigmoid
    return -(w * (wp * y * ls(s) + wn * (1 - y) * ls(-s))).sum() / w.sum()


def _row_weights(w: Optional[torch.Tensor], n: int, dtype) -> torch.Tensor:
    return torch.ones(n, dtype=dtype) if w is None else w.to(dtype)


def fit_linear(z: torch.Tensor, y: torch.Tensor, l2: float, weight: Optional[torch.Tensor] = None,
               steps: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
    """(w [D], b) of a class-weighted, L2-regularised logistic regression on standardised ``z``
    ``[N, D]`` with (soft) labels ``y`` in [0, 1] and optional row weights; full-batch L-BFGS in float64."""
    z, y = z.double(), y.double()
    rw = _row_weights(weight, len(y), torch.float64)
    wp, wn = _class_weights(y, rw)
    w = torch.zeros(z.shape[1] + 1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=steps, line_search_fn="strong_wolfe", tolerance_grad=1e-7,
                            tolerance_change=1e-10)

    def closure():
        opt.zero_grad()
        loss = _weighted_bce(z @ w[:-1] + w[-1], y, rw, wp, wn) + l2 * w[:-1].pow(2).sum()
        loss.backward()
        return loss
    with torch.enable_grad():
        opt.step(closure)
    w = w.detach()
    return w[:-1], w[-1]


def fit_mlp(z: torch.Tensor, y: torch.Tensor, l2: float, weight: Optional[torch.Tensor] = None, hidden: int = 64,
            steps: int = 300, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """(w1 [D, hidden], b1, w2 [hidden], b2) of a one-hidden-layer ReLU MLP, class-weighted BCE with
    L2 on both weight matrices and optional row weights; full-batch Adam in float32."""
    g = torch.Generator().manual_seed(seed)
    z, y = z.float(), y.float()
    rw = _row_weights(weight, len(y), torch.float32)
    wp, wn = _class_weights(y, rw)
    D = z.shape[1]
    w1 = (torch.randn(D, hidden, generator=g) * math.sqrt(2.0 / D)).requires_grad_(True)
    b1 = torch.zeros(hidden, requires_grad=True)
    w2 = (torch.randn(hidden, generator=g) * math.sqrt(1.0 / hidden)).requires_grad_(True)
    b2 = torch.zeros((), requires_grad=True)
    opt = torch.optim.Adam([w1, b1, w2, b2], lr=3e-3)
    with torch.enable_grad():
        for _ in range(steps):
            loss = _weighted_bce(torch.relu(z @ w1 + b1) @ w2 + b2, y, rw, wp, wn) + \
                l2 * (w1.pow(2).sum() + w2.pow(2).sum())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return w1.detach(), b1.detach(), w2.detach(), b2.detach()


def platt(logits: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(a, b) minimising the log-loss of ``sigmoid(a * logit + b)`` against ``y``, unweighted: the
    result is a probability of the data as it comes, not of a balanced sample."""
    ab = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([ab], max_iter=100, line_search_fn="strong_wolfe")
    z, y = logits.double(), y.double()

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(ab[0] * z + ab[1], y)
        loss.backward()
        return loss
    with torch.enable_grad():
        opt.step(closure)
    a, b = ab.detach().tolist()
    return a, b


def fit_head(features: torch.Tensor, layers: Sequence[int], y: torch.Tensor, c: Candidate,
             platt_ab: tuple[float, float] = (1.0, 0.0), weight: Optional[torch.Tensor] = None, seed: int = 0) -> Head:
    """A ``Head`` for candidate ``c`` fitted on all given rows (its calibration passed in)."""
    x = select(features, layers, c.inputs)
    mean, scale = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mean) / scale
    if c.kind == "linear":
        w1, b1 = fit_linear(z, y, c.l2, weight)
        return Head(c.inputs, mean, scale, w1.float(), b1.float(), platt=platt_ab)
    w1, b1, w2, b2 = fit_mlp(z, y, c.l2, weight, seed=seed)
    return Head(c.inputs, mean, scale, w1, b1, w2, b2, platt=platt_ab)


def oof_logits(features: torch.Tensor, layers: Sequence[int], y: torch.Tensor, fold: torch.Tensor, c: Candidate,
               weight: Optional[torch.Tensor] = None, seed: int = 0) -> torch.Tensor:
    """Out-of-fold logits of candidate ``c``: each fold scored by a model fitted on the others."""
    out = torch.empty(len(y), dtype=torch.float64)
    for f in fold.unique().tolist():
        tr, te = fold != f, fold == f
        w = None if weight is None else weight[tr]
        out[te] = fit_head(features[tr], layers, y[tr], c, weight=w, seed=seed).logit(select(features[te], layers, c.inputs))
    return out


def fit_one(features: torch.Tensor, layers: Sequence[int], y: torch.Tensor, groups: Sequence,
            candidates: Sequence[Candidate], k: int, weight: Optional[torch.Tensor] = None,
            seed: int = 0) -> tuple[Head, torch.Tensor, dict]:
    """(head, out-of-fold calibrated P(yes) [N], info) for one proposition with labels ``y`` [N] and
    optional row weights (in the fit; calibration is unweighted).

    The head is the best candidate (by out-of-fold AUROC over ``k`` grouped folds; the only one when
    there is one) refitted on all rows, Platt-calibrated on its out-of-fold logits. The
    out-of-fold probabilities are honest (see the module docstring)."""
    fold = group_folds(groups, (y >= 0.5).tolist(), k, seed)
    scored = []
    for c in candidates:
        z = oof_logits(features, layers, y, fold, c, weight, seed)
        scored.append((auroc(z, y >= 0.5), c, z))
    best_auc, best, z = max(scored, key=lambda t: t[0])
    head = fit_head(features, layers, y, best, platt(z, y), weight, seed)
    p = torch.empty(len(y), dtype=torch.float64)
    for f in range(k):
        tr, te = fold != f, fold == f
        if len(candidates) == 1:  # calibrate each fold's logits on the other folds' logits
            a, b = platt(z[tr], y[tr])
            p[te] = torch.sigmoid(a * z[te] + b)
        else:  # nested: choose, fit and calibrate again on the other folds alone
            idx = tr.nonzero().flatten().tolist()
            inner, _, _ = fit_one(features[tr], layers, y[tr], [groups[i] for i in idx], candidates, k - 1,
                                  None if weight is None else weight[tr], seed)
            p[te] = inner.prob(select(features[te], layers, inner.inputs)).double()
    return head, p, {"candidate": str(best), "selection_auroc": best_auc}
