"""Scores of predicted P(yes) against labels: per-column accuracy, balanced accuracy, F1, AUROC and
expected calibration error. The bottom layer: training the grader selects by them, and
``rbr_fast.evaluation`` reports them."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

METRICS = ("accuracy", "balanced_accuracy", "f1", "auroc", "ece")


@dataclass
class PropositionScore:
    name: str
    positives: int  # human "yes" labels
    n: int
    accuracy: float  # at P(yes) >= threshold
    balanced_accuracy: float  # mean of the true-positive and true-negative rates (nan without both classes)
    f1: float  # of the "yes" class (nan when nothing is labelled or predicted yes)
    auroc: float  # how well P(yes) ranks yes above no, threshold-free (nan without both classes)
    ece: float  # expected calibration error: mean |observed yes-rate - mean P(yes)| over 10 bins, by count


def auroc(score: torch.Tensor, label: torch.Tensor) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties)."""
    pos, neg = int(label.sum()), int((~label).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    s = score.double()
    order = torch.argsort(s)
    ranks = torch.empty_like(s)
    ranks[order] = torch.arange(1, len(s) + 1, dtype=torch.float64)
    uniq, inv = torch.unique(s, return_inverse=True)  # average the ranks of tied scores
    ranks = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inv, ranks)[inv] / torch.bincount(inv)[inv]
    return float((ranks[label].sum() - pos * (pos + 1) / 2) / (pos * neg))


def calibration_bins(p: torch.Tensor, y: torch.Tensor, bins: int = 10):
    """(count, mean P(yes), observed yes-rate) per equal-width bin of ``p`` (empty bins: count 0, nan)."""
    p, y = p.flatten().double(), y.flatten().double()
    b = torch.clamp((p * bins).long(), 0, bins - 1)
    count = torch.bincount(b, minlength=bins).double()
    mean_p = torch.zeros(bins, dtype=torch.float64).index_add_(0, b, p) / count
    rate = torch.zeros(bins, dtype=torch.float64).index_add_(0, b, y) / count
    return count, mean_p, rate


def expected_calibration_error(p: torch.Tensor, y: torch.Tensor, bins: int = 10) -> float:
    """Sum over bins of (share of rows) x |observed yes-rate - mean P(yes)|; nan for no rows."""
    count, mean_p, rate = calibration_bins(p, y, bins)
    seen = count > 0
    return float((count[seen] / count.sum() * (rate[seen] - mean_p[seen]).abs()).sum()) if seen.any() else float("nan")


def score(names: list[str], p_yes: torch.Tensor, labels: torch.Tensor, threshold: float = 0.5) -> list[PropositionScore]:
    """Scores of each column of ``p_yes`` [N, P] against ``labels`` [N, P]: booleans, or floats where
    NaN marks a row without a label for that column (a label counts as yes at >= 0.5)."""
    if p_yes.shape != labels.shape or p_yes.shape[1] != len(names):
        raise ValueError(f"p_yes {tuple(p_yes.shape)}, labels {tuple(labels.shape)} and {len(names)} names disagree")
    out = []
    nan = float("nan")
    labels = labels.double()
    for j, name in enumerate(names):
        known = ~torch.isnan(labels[:, j])
        p, y = p_yes[known, j], labels[known, j] >= 0.5
        pred = p >= threshold
        tp, tn = int((pred & y).sum()), int((~pred & ~y).sum())
        fp, fn = int((pred & ~y).sum()), int((~pred & y).sum())
        pos, neg = tp + fn, tn + fp
        bal = (tp / pos + tn / neg) / 2 if pos and neg else nan
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else nan
        out.append(PropositionScore(name, pos, len(y), (tp + tn) / max(len(y), 1), bal, f1, auroc(p, y),
                                    expected_calibration_error(p, y)))
    return out


# enough yes and no labels for a proposition's scores to mean something: means are also given over these
LABELLED_ENOUGH = (5, 15)


def means(scores: list[PropositionScore]) -> dict[str, dict[str, float]]:
    """Means of every metric (nan entries left out) over all propositions, and over those with at
    least k yes and k no labels for each k in ``LABELLED_ENOUGH``."""
    def mean(ss):
        return {k: _nanmean([getattr(s, k) for s in ss]) for k in METRICS}
    out = {"all": mean(scores)}
    for k in LABELLED_ENOUGH:
        out[f"yes>={k}"] = mean([s for s in scores if min(s.positives, s.n - s.positives) >= k])
    return out


def _nanmean(xs: list[float]) -> float:
    xs = [x for x in xs if x == x]
    return sum(xs) / len(xs) if xs else float("nan")


def summary(scores: list[PropositionScore]) -> dict:
    return {"propositions": [asdict(s) for s in scores], "mean": means(scores)}
