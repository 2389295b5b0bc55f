"""How well a grader answers: per-proposition scores against human labels (``rbr-fast eval-grader``).

A trained grader is scored by grouped cross-validation (``cross_validated``): no row is scored by a
head that was trained on it. With the shipped data, also the written replies no head was trained on
and response-type inference on prompts the request heads never saw.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from .. import data
from ..data.labelled import LabelledRow, default_rows, read_labelled
from ..data.readers import MODELS, Example
from ..grading.feature_cache import FeatureCache
from ..grading.grader import Grader, Grades
from ..grading.heads import PropositionHeads
from ..grading.train import TrainResult, default_layer, recipe, train
from ..io import pyplot
from ..metrics import PropositionScore, calibration_bins, means, score, summary
from ..rules import LOW_CONFIDENCE
from . import response_types


@dataclass
class GraderReport:
    """What ``evaluate_grader`` measured; ``to_json`` is the ``scores.json`` of ``rbr-fast eval-grader``."""
    how: str  # "zero-shot questions" or "trained heads, grouped 5-fold cross-validation"
    grades: Grades
    labels: torch.Tensor  # [N, P] human labels of ``grades.propositions``
    scores: list[PropositionScore]
    by_response_type: dict[str, dict]  # mean scores over the rows of each response type
    written_test: Optional[list[PropositionScore]] = None  # written replies for the rare propositions
    type_inference: Optional[dict] = None  # response-type inference on held-out prompts

    def to_json(self, answered_by: dict[str, str]) -> dict:
        return {"grader": self.how, "answered_by": answered_by, **summary(self.scores),
                "by_response_type": self.by_response_type,
                "written_test": summary(self.written_test) if self.written_test else None,
                "type_inference": self.type_inference}


def evaluate_grader(grader: Grader, examples: list[Example], labelled: list[LabelledRow], names: list[str],
                    cache_root: Path, *, shipped_extras: bool = False,
                    log: Callable[[str], None] = print) -> GraderReport:
    """Score ``grader`` on ``examples`` (rows with a human label for every name in ``names``);
    ``labelled`` are the same rows read as training rows (``read_labelled``) for the cross-validation
    of a trained grader. ``shipped_extras``: also score the written rare-proposition test replies and
    response-type inference (the shipped data's held-out sets)."""
    convs, comps = [r.conversation for r in examples], [r.completion for r in examples]
    how, heads = "zero-shot questions", None
    if grader.heads is None:
        grades = grader.grade(convs, comps, names)
    else:
        how = "trained heads, grouped 5-fold cross-validation"
        grades, heads = cross_validated(grader, labelled, names, cache_root, log)
    labels = torch.tensor([[r.labels[n] for n in grades.propositions] for r in examples])
    report = GraderReport(how, grades, labels, score(grades.propositions, grades.p_yes, labels), {})
    for t in sorted({r.response_type for r in examples if r.response_type}):
        keep = torch.tensor([r.response_type == t for r in examples])
        report.by_response_type[t] = means(score(grades.propositions, grades.p_yes[keep], labels[keep]))
    if heads is not None and shipped_extras:  # replies written for the rare propositions, never trained on
        test = [r for r in read_labelled(data.written_rare("test"), grader.spec, "written") if r.labels]
        held = [n for n in names if n in heads.heads and any(n in r.labels for r in test)]
        if test and held:
            feats = FeatureCache(cache_root, grader, heads.layers).get([r.conversation for r in test],
                                                                       [r.completion for r in test])
            y = torch.tensor([[r.labels.get(n, float("nan")) for n in held] for r in test])
            report.written_test = score(held, heads.predict(feats, held), y)
    if grader.heads is not None and grader.spec.prompt_propositions and shipped_extras:
        rec = recipe(grader.heads.report.get("layers") or [default_layer(grader.model.config.num_hidden_layers)])
        report.type_inference = response_types.cross_set(
            grader, cache_root, lambda rs: train(grader, rs, cache_root, rec, log=lambda _: None).heads, LOW_CONFIDENCE)
    return report


def cross_validated(grader: Grader, rows: list[LabelledRow], names: list[str], cache_root: Path,
                    log: Callable[[str], None]) -> tuple[Grades, PropositionHeads]:
    """(Grades of ``rows`` by a trained grader that never saw them, the heads trained on all of the
    pool): heads are retrained (same layers) by grouped cross-validation over ``rows``, plus the
    shipped training data when the grader's heads were trained on it (a row in both counts once,
    with the evaluated row's labels), each row scored by the fold that held it out; priors and
    questions answer the rest as the grader does."""
    spec = grader.spec
    shipped = set(grader.heads.report.get("sources", {})) & {"gold", *(f"xstest/{m}" for m in MODELS)}
    extra = default_rows(spec) if shipped else []
    mine = {r.key for r in rows}
    pool = rows + [r for r in extra if r.key not in mine]
    res = train(grader, pool, cache_root, recipe(grader.heads.report.get("layers") or
                                                 [default_layer(grader.model.config.num_hidden_layers)]), log=log)
    p_yes = torch.empty(len(rows), len(names))
    mass = torch.ones(len(rows), len(names))
    rest = [n for n in names if n not in res.heads.heads]
    if rest:  # what the grader does for names without a head: its prior, or the question
        g = grader.grade([r.conversation for r in rows], [r.completion for r in rows], rest)
        p_yes[:, [names.index(n) for n in rest]] = g.p_yes
        mass[:, [names.index(n) for n in rest]] = g.mass
    for n in names:
        if n in res.heads.heads:
            p_yes[:, names.index(n)] = res.oof[:len(rows), res.names.index(n)].float()
    return Grades(p_yes, mass, names), res.heads


def scores_by_source(res: TrainResult) -> dict[str, list[PropositionScore]]:
    """Out-of-fold scores of a training run's heads on the rows of each data source (gold, xstest,
    written, ...): propositions with both labels among those rows only."""
    scored = [n for n in res.names if n in res.heads.heads]
    cols = [res.names.index(n) for n in scored]
    out = {}
    for source in sorted({r.source.split("/")[0] for r in res.rows}):
        keep = torch.tensor([r.source.split("/")[0] == source for r in res.rows])
        scores = score(scored, res.oof[keep][:, cols], res.labels[keep][:, cols])
        scores = [s for s in scores if s.n and s.positives and s.positives < s.n]
        if scores:
            out[source] = scores
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
