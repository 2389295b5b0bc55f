"""Grader accuracy against human proposition labels: per-proposition accuracy, balanced accuracy,
F1, AUROC and expected calibration error, and a reliability (calibration) plot."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch

from ..io import pyplot


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


def table(scores: list[PropositionScore], answered_by: Optional[dict[str, str]] = None) -> str:
    """A fixed-width table with the means of ``means``; ``answered_by``: a column saying how the
    grader answers each proposition (head, prior, question)."""
    by = answered_by or {}
    lines = [f"{'proposition':40s} {'yes/n':>8s} {'acc':>6s} {'bal_acc':>7s} {'f1':>6s} {'auroc':>6s} {'ece':>6s}"
             + (" by" if by else "")]
    for s in scores:
        lines.append(f"{s.name:40s} {f'{s.positives}/{s.n}':>8s} {s.accuracy:6.3f} {s.balanced_accuracy:7.3f} "
                     f"{s.f1:6.3f} {s.auroc:6.3f} {s.ece:6.3f}" + (f" {by.get(s.name, '')}" if by else ""))
    for what, m in means(scores).items():
        lines.append(f"{'mean, ' + what:40s} {'':>8s} {m['accuracy']:6.3f} {m['balanced_accuracy']:7.3f} "
                     f"{m['f1']:6.3f} {m['auroc']:6.3f} {m['ece']:6.3f}")
    return "\n".join(lines)


def _nanmean(xs: list[float]) -> float:
    xs = [x for x in xs if x == x]
    return sum(xs) / len(xs) if xs else float("nan")


def summary(scores: list[PropositionScore]) -> dict:
    return {"propositions": [asdict(s) for s in scores], "mean": means(scores)}


def reliability_plot(p_yes: torch.Tensor, labels: torch.Tensor, path: Path, bins: int = 10,
                     title: str = "grader calibration") -> Optional[Path]:
    """Observed yes-rate against predicted P(yes), all propositions pooled, with bin counts.
    Returns None (and writes nothing) when matplotlib is not installed."""
    plt = pyplot()
    if plt is None:
        return None
    known = ~torch.isnan(labels.double())
    count, mean_p, rate = calibration_bins(p_yes[known], labels.double()[known] >= 0.5, bins)
    seen = count > 0
    mean_p, rate = mean_p[seen], rate[seen]
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5, 6), height_ratios=(3, 1), sharex=True)
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.plot(mean_p.numpy(), rate.numpy(), "o-", label="grader")
    ax.set_ylabel("observed fraction labelled yes")
    ax.set_title(title)
    ax.legend()
    hist.bar((torch.arange(bins) + 0.5).numpy() / bins, count.numpy(), width=1 / bins, edgecolor="black")
    hist.set_xlabel("predicted P(yes)")
    hist.set_ylabel("count")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
