"""Training proposition heads for a grader (``rbr-fast train-grader``): labelled rows -> cached pooled
features -> one cross-validated, calibrated head per proposition with enough labels.

Labels come from people (the gold format's ``propositions``), from a teacher (``teacher_labels``:
any grader on the same spec, e.g. a larger model's question path or an earlier trained grader; its
P(yes) is a soft label), or both (a human label wins). A proposition with fewer than
``min_positives`` yes (or no) labels gets no head; its labels' base rate is kept as a prior, and
the grader answers it with that prior or asks it as a question (``Grader(priors=...)``).

The default ``recipe`` was picked by measurement on the gold set (docs/rules-and-grader.md): a
linear head over layer 21 of 30 (of SmolLM2-135M; about 2/3 of the depth), reading the reply's mean
state, its element-wise max and the mean of its opening tokens (L2 0.3 per standardised input); for
questions about the request the same three poolings of the conversation's last turn, read from the
conversation alone (L2 0.3; the request heads' recipe was picked on prompts held out across sets,
``evaluation.response_types.cross_set``).
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..metrics import score as score_columns
from .feature_cache import FeatureCache
from .fit_heads import Candidate, fit_one
from .heads import PropositionHeads, select
from ..data.labelled import LabelledRow, content_key

REPLY_POOLINGS = ("reply_mean", "reply_max", "reply_open")
# on a conversation alone the reply poolings cover its last turn (``features``): the request itself
REQUEST_POOLINGS = REPLY_POOLINGS


@dataclass(frozen=True)
class Recipe:
    """The candidates a head is chosen from, per kind of question: one, or several to choose from per
    proposition (nested cross-validation then scores the choice honestly, at k times the cost)."""
    reply: tuple[Candidate, ...]
    request: tuple[Candidate, ...]

    @property
    def layers(self) -> list[int]:
        return sorted({l for c in self.reply + self.request for l, _ in c.inputs})


def recipe(layers: Sequence[int], l2: Sequence[float] = (0.3,), kinds: Sequence[str] = ("linear",),
           request_l2: Sequence[float] = (0.3,)) -> Recipe:
    """Candidates: every (layer, L2, kind), reading that layer's ``REPLY_POOLINGS`` with ``l2``
    (questions about the reply) or ``REQUEST_POOLINGS`` with ``request_l2`` (questions about the
    request, on the conversation alone)."""
    def cands(pools, strengths):
        return tuple(Candidate(tuple((l, p) for p in pools), a, k) for l in layers for a in strengths for k in kinds)
    return Recipe(cands(REPLY_POOLINGS, l2), cands(REQUEST_POOLINGS, request_l2))


def default_layer(num_layers: int) -> int:
    """About 2/3 of the depth: layer 21 of SmolLM2-135M's 30, where the gold-set probes peak."""
    return max(1, round(num_layers * 0.7))


@dataclass
class TrainResult:
    heads: PropositionHeads
    names: list[str]  # columns: the spec's propositions, then its prompt propositions
    labels: torch.Tensor  # [N, P] labels in [0, 1], NaN where a row has none
    oof: torch.Tensor  # [N, P] honest P(yes): out-of-fold on rows labelled for the name, the final head's
    # on the others (it never saw them); NaN for names without a head. A reply row's prompt
    # propositions are those of its conversation's prompt-only row.
    report: dict = field(default_factory=dict)
    rows: list = field(default_factory=list)  # the N rows: the ones given, then the prompt-only rows made


def with_prompt_rows(rows: Sequence[LabelledRow], request: Sequence[str]) -> tuple[list[LabelledRow], dict[int, int]]:
    """(rows + one prompt-only row per conversation whose reply rows label a prompt proposition,
    {reply row: its prompt row}). Request heads read the conversation alone (``Grader.grade_prompts``
    has no reply), so they learn from prompt-only rows, each prompt once, whatever its replies."""
    out = list(rows)
    where = {content_key(r.conversation, None): i for i, r in enumerate(out) if r.completion is None}
    prompt_of = {}
    for i, r in enumerate(rows):
        if r.completion is None or not any(n in r.labels for n in request):
            continue
        k = content_key(r.conversation, None)
        if k not in where:
            where[k] = len(out)
            out.append(LabelledRow(r.conversation, None, {n: r.labels[n] for n in request if n in r.labels},
                                   f"prompt:{k[:16]}", r.source))
        prompt_of[i] = where[k]
    return out, prompt_of


def label_matrix(rows: Sequence[LabelledRow], names: Sequence[str]) -> torch.Tensor:
    """``[N, len(names)]`` float64 labels, NaN where a row has no label for a name."""
    return torch.tensor([[r.labels.get(n, math.nan) for n in names] for r in rows], dtype=torch.float64)


def train(grader, rows: Sequence[LabelledRow], cache_root, recipe_: Recipe = None, folds: int = 5,
          min_positives: int = 10, balance_sources: bool = True, seed: int = 0,
          log: Callable[[str], None] = print) -> TrainResult:
    """Heads for every proposition and prompt proposition of ``grader.spec`` with at least
    ``min_positives`` yes and no labels in ``rows`` (features from ``grader``, cached under
    ``cache_root``), their honest P(yes) on ``rows`` and a report. ``balance_sources``: each data
    source (the part of ``LabelledRow.source`` before a ``/``: gold, xstest, a file) labelling a
    proposition weighs the same in its fit, however many rows it has."""
    if not rows:
        raise ValueError("train: no labelled rows")
    spec = grader.spec
    recipe_ = recipe_ or recipe([default_layer(grader.model.config.num_hidden_layers)])
    request = list(spec.prompt_propositions)
    names = spec.proposition_names + request
    given = len(rows)
    rows, prompt_of = with_prompt_rows(rows, request)
    labels = label_matrix(rows, names)
    cols = [names.index(n) for n in request]
    replies = [i for i, r in enumerate(rows) if r.completion is not None]
    if cols and replies:
        labels[torch.tensor(replies)[:, None], torch.tensor(cols)] = math.nan
    feats = FeatureCache(cache_root, grader, recipe_.layers).get([r.conversation for r in rows],
                                                                 [r.completion for r in rows])
    heads, priors, info = {}, {}, {}
    oof = torch.full(labels.shape, math.nan, dtype=torch.float64)
    unlabelled = [n for j, n in enumerate(names) if torch.isnan(labels[:, j]).all()]
    if unlabelled:
        log(f"  no labels: {', '.join(unlabelled)} (asked as questions)")
    for j, name in enumerate(names):
        known = ~torch.isnan(labels[:, j])
        y = labels[known, j]
        pos, neg = int((y >= 0.5).sum()), int((y < 0.5).sum())
        if name in unlabelled:
            continue
        if min(pos, neg) < max(min_positives, folds):
            priors[name] = (float(y.sum()) + 1) / (len(y) + 2)  # Laplace: never exactly 0 or 1
            log(f"  {name}: {pos} yes / {neg} no labels: too few for a head (prior {priors[name]:.3f})")
            continue
        idx = known.nonzero().flatten()
        weight = _source_weights([rows[i] for i in idx.tolist()]) if balance_sources else None
        head, p, info[name] = fit_one(feats[idx], recipe_.layers, y, [rows[i].group for i in idx.tolist()],
                                      recipe_.request if name in request else recipe_.reply, folds, weight, seed)
        heads[name] = head
        oof[:, j] = head.prob(select(feats, recipe_.layers, head.inputs)).double()
        oof[idx, j] = p
        log(f"  {name}: {pos} yes / {neg} no, {info[name]['candidate']}")
    if prompt_of and cols:
        src, dst = torch.tensor(list(prompt_of)), torch.tensor(list(prompt_of.values()))
        oof[src[:, None], torch.tensor(cols)] = oof[dst[:, None], torch.tensor(cols)]
    scored = [n for n in names if n in heads]
    cols = [names.index(n) for n in scored]
    cv = score_columns(scored, oof[:, cols], labels[:, cols]) if scored else []
    report = {"rows": given, "prompt_rows_made": len(rows) - given, "sources": _count(r.source for r in rows[:given]), "folds": folds,
              "min_positives": min_positives, "balance_sources": balance_sources, "layers": recipe_.layers,
              "heads": {s.name: {**info[s.name], **{k: v for k, v in asdict(s).items() if k != "name"}} for s in cv},
              "priors": priors}
    defs = spec.definitions()
    out = PropositionHeads(heads, spec.fingerprint(), grader.model_signature(), list(grader.layout.head), priors,
                           report, {n: defs[n] for n in [*heads, *priors]})
    return TrainResult(out, names, labels, oof, report, rows)


def _source_weights(rows: Sequence[LabelledRow]) -> torch.Tensor:
    """Row weights (mean 1) under which every source has the same total weight."""
    src = [r.source.split("/")[0] for r in rows]
    n = _count(src)
    return torch.tensor([len(rows) / (len(n) * n[s]) for s in src], dtype=torch.float64)


def _count(xs) -> dict:
    return dict(Counter(xs))


def teacher_labels(teacher, rows: Sequence[LabelledRow], cache: Path) -> list[LabelledRow]:
    """``rows`` with the teacher's P(yes) filling every label they lack (human labels win). The
    teacher is any ``Grader`` on the same spec; its grades are cached by content in ``cache``
    (a jsonl file), so a killed run resumes."""
    from .grade_cache import grade_cached
    keys = [r.key for r in rows]
    convs, comps = [r.conversation for r in rows], [r.completion for r in rows]
    reply = grade_cached(teacher, keys, convs, comps, cache)
    request = teacher.grade_prompts(convs) if teacher.spec.prompt_propositions else None
    out = []
    for i, r in enumerate(rows):
        soft = dict(zip(reply.propositions, reply.p_yes[i].tolist()))
        if request is not None:
            soft.update(zip(request.propositions, request.p_yes[i].tolist()))
        out.append(LabelledRow(r.conversation, r.completion, {**soft, **r.labels}, r.group, r.source))
    return out
