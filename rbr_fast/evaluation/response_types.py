"""Response-type inference measured where it was not trained: request heads (the spec's prompt
propositions) fitted on some prompt sets (``labelled.prompt_rows``: XSTest, the gold set's
conversations, the written requests) and scored on prompts of another.

``cross_set`` trains on every set but part of one and scores that part: the gold set in two
halves (each half scored by heads trained on XSTest, the written prompts and the other half),
and XSTest scored by heads trained on the gold and written prompts. Prompts shared between a
training and a scored set are dropped from training.
"""
from __future__ import annotations

import hashlib
import math
from typing import Callable, Sequence

from ..data.labelled import LabelledRow, PromptRow, prompt_rows
from ..grading.feature_cache import FeatureCache


def half(group: str) -> int:
    """0 or 1: a fixed split of a set's rows by their cross-validation group (the conversation's
    hash for prompt rows and ``read_labelled`` rows alike)."""
    return hashlib.sha1(group.encode()).digest()[0] & 1


def type_scores(truth: Sequence[str], types: Sequence[str], confidence: Sequence[float],
                low: float) -> dict[str, float]:
    """Accuracy of the type, of refuse-vs-comply, and of refuse-vs-comply on confident rows
    (confidence >= ``low``), with the share of rows below ``low``."""
    n = len(truth)
    if n == 0:
        return {}
    rvc = [(t == "comply") == (p == "comply") for t, p in zip(truth, types)]
    sure = [i for i in range(n) if confidence[i] >= low]
    return {"n": n, "type_accuracy": sum(t == p for t, p in zip(truth, types)) / n,
            "refuse_vs_comply": sum(rvc) / n, "unsure_share": 1 - len(sure) / n,
            "refuse_vs_comply_confident": sum(rvc[i] for i in sure) / len(sure) if sure else math.nan}


def cross_set(grader, cache_root, fit: Callable[[list[LabelledRow]], object], low: float,
              sources: Sequence[str] = ("xstest", "gold", "written"),
              log: Callable[[str], None] = print) -> dict[str, dict]:
    """Scores of request heads on prompts they were not fitted on (see the module docstring), with
    ``sources`` the prompt sets to fit on. ``fit(rows) -> PropositionHeads`` trains heads; the
    grader gives the features."""
    spec = grader.spec
    names = list(spec.prompt_propositions)
    rows = prompt_rows(spec, sorted(set(sources) | {"xstest", "gold"}))
    splits = {f"gold half {h}": [r for r in rows if r.source == "gold" and half(r.row.group) == h] for h in (0, 1)}
    splits["xstest"] = [r for r in rows if r.source == "xstest"]
    out = {}
    for what, held in splits.items():
        scored = {id(r) for r in held}
        keys = {_text(r) for r in held}  # the same prompt in two sets is held out of both
        train_rows = [r.row for r in rows if id(r) not in scored and _text(r) not in keys and r.source in sources
                      and (r.source != held[0].source or what.startswith("gold"))]
        log(f"type inference, {what}: heads fitted on {len(train_rows)} prompts, scored on {len(held)}")
        heads = fit(train_rows)
        feats = FeatureCache(cache_root, grader, heads.layers).get([r.row.conversation for r in held],
                                                                   [None] * len(held))
        p = heads.predict(feats, names)
        out[what] = type_scores([r.response_type for r in held], spec.infer_types(p), spec.type_confidence(p), low)
    return out


def _text(r: PromptRow) -> str:
    return r.row.group.split(":", 1)[1]


def table(report: dict[str, dict]) -> str:
    lines = [f"{'held-out prompts':18s} {'n':>5s} {'type acc':>9s} {'refuse/comply':>14s} {'unsure':>7s} "
             f"{'r/c confident':>14s}"]
    for what, s in report.items():
        lines.append(f"{what:18s} {s['n']:5d} {s['type_accuracy']:9.3f} {s['refuse_vs_comply']:14.3f} "
                     f"{s['unsure_share']:7.3f} {s['refuse_vs_comply_confident']:14.3f}")
    return "\n".join(lines)
