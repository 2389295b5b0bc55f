"""``RuleBasedReward``: grader -> proposition probabilities -> features -> RBR reward (+ RM score)."""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch

from ..grading import Grader, Grades, load_grader
from ..ops import rbr_reward_from_props
from ..rules import LOW_CONFIDENCE, RuleSpec, resolve_spec
from .weights import RewardWeights

TypeLike = Union[str, int]
WeightsLike = Union[RewardWeights, str, Path, None]

# What ``weights=None`` means for every RuleBasedReward, adapter, server, command and PPO run: a
# ``RewardWeights.named`` name. The one place to change the drop-in reward's default.
def default_weights(spec: RuleSpec) -> str:
    """The weights the drop-in reward uses: the shipped ones fitted on XSTest (``"xstest"``) for a
    spec with the default spec's structure (its wording may differ), hand-set ones (``"hand"``) for
    any other."""
    return "xstest" if spec.structure() == RuleSpec.default().structure() else "hand"


def resolve_weights(weights: WeightsLike, spec: RuleSpec) -> RewardWeights:
    """``RewardWeights`` for ``spec`` from weights, a ``RewardWeights.named`` name ("hand", "xstest")
    or file, or None / "default" (``default_weights``: hand-set weights, with one warning, for a
    spec no shipped weights were fitted for). Refuses weights fitted for other propositions or
    classes."""
    if isinstance(weights, RewardWeights):
        weights.check(spec)
        return weights
    if weights is None or weights == "default":
        weights = default_weights(spec)
        if weights == "hand":
            warnings.warn(f"{spec.source}: no fitted reward weights for this spec's propositions and classes: "
                          "hand-set weights (each class weighs its rank); `rbr-fast fit` fits them on ranked "
                          "completions", stacklevel=3)
    return RewardWeights.named(weights, spec)


def proposition_means(details: Sequence[dict]) -> dict[str, float]:
    """``{"rbr/<proposition>": mean P(yes)}`` over a batch of ``details`` (empty for no details)."""
    names = details[0]["propositions"] if details else ()
    return {f"rbr/{n}": sum(d["propositions"][n] for d in details) / len(details) for n in names}


def answer_shares(detail: dict) -> dict[str, float]:
    """``rbr/zero_shot_share``: share of the spec's propositions the grader answered by asking its
    own in-process model (``details()["answered_by"]`` "question"), not by a trained head or prior;
    ``rbr/served_share``: share asked of a served model."""
    by = detail["answered_by"]
    return {f"rbr/{key}_share": sum(a == how for a in by.values()) / len(by)
            for key, how in (("zero_shot", "question"), ("served", "served"))}


def reward_metrics(details: Sequence[dict]) -> dict[str, float]:
    """What the adapters and PPO log per batch: ``proposition_means``, plus ``answer_shares`` (how the
    grader answers the spec's propositions),
    ``rbr/type_inferred_share`` and ``rbr/type_unsure_share`` (inferred with confidence below
    ``LOW_CONFIDENCE``). Empty for no details."""
    if not details:
        return {}
    n = len(details)
    unsure = sum(d["response_type_source"] == "inferred" and d["response_type_confidence"] < LOW_CONFIDENCE
                 for d in details)
    return {**proposition_means(details),
            **answer_shares(details[0]),
            "rbr/type_inferred_share": sum(d["response_type_source"] == "inferred" for d in details) / n,
            "rbr/type_unsure_share": unsure / n}


@dataclass
class _Scored:
    """What ``RuleBasedReward._run`` computed for a batch."""
    grades: Grades
    response_type: torch.Tensor  # [N] index into the spec's response types
    reward: torch.Tensor  # [N] RBR reward
    features: torch.Tensor  # [N, F]
    rm: Optional[torch.Tensor]  # [N] float64 reward-model scores, when given
    inferred: dict  # row -> (prompt propositions' P(yes), type confidence), for rows whose type was inferred


class RuleBasedReward:
    """The RBR reward of a rule spec.

    Args:
        grader: answers the spec's propositions (its ``spec`` is used unless ``spec`` is given, which
            must then be the same spec).
        weights: per-response-type feature weights, or a ``RewardWeights.named`` name or file
            (default: ``default_weights(spec)``).
    """

    def __init__(self, grader: Grader, spec: Optional[RuleSpec] = None, weights: WeightsLike = None):
        self.grader = grader
        self.spec = spec or grader.spec
        if self.spec.fingerprint() != grader.spec.fingerprint():
            raise ValueError("the grader asks another spec's questions; build the Grader with spec=... too")
        self.weights = resolve_weights(weights, self.spec)
        self._conj = self.spec.conjunctions()

    @classmethod
    def load(cls, model: Optional[str] = None, *, weights: WeightsLike = None,
             spec: Union[RuleSpec, str, Path, None] = None, **grader_kwargs) -> "RuleBasedReward":
        """The reward on a grader loaded from ``model`` (``Grader.from_pretrained``: a folder or hub id,
        with ``revision``, ``token``, ``gguf_file``, ``dtype``, ``device``, ...; default: the embedded
        SmolLM2, ``Grader.default``). The spec and weights are checked before the model loads, so a
        wrong weights file fails at once."""
        spec = resolve_spec(spec)
        w = resolve_weights(weights, spec)
        return cls(load_grader(spec, model, **grader_kwargs), weights=w)

    def _types(self, prompts: Sequence, response_types: Optional[Sequence[Optional[TypeLike]]], n: int):
        """(type index per completion, rows whose type was inferred, their prompt grades or None,
        their type confidence ``RuleSpec.type_confidence``):
        a None entry (or no ``response_types``) is inferred, each distinct prompt graded once; given
        types are kept whatever else is in the batch."""
        types = [None] * n if response_types is None else response_types
        if isinstance(types, (str, bytes)) or len(types) != n:
            raise ValueError(f"response_types must be a sequence of {n} names, labels, indices or None")
        out = [None if t is None else self._type_index(t) for t in types]  # given types checked first
        missing = [i for i, t in enumerate(out) if t is None]
        inferred, confidence = None, []
        if missing:
            if not self.spec.type_rules:
                raise ValueError("response_types is required: give one per completion (e.g. 'hard_refuse' or "
                                 "'Comply'); this spec has no response_type_rules to infer it from")
            inferred = self._infer([prompts[i] for i in missing])
            for i, t in zip(missing, self.spec.infer_types(inferred.p_yes)):
                out[i] = self.spec.type_index(t)
            confidence = self.spec.type_confidence(inferred.p_yes)
        return torch.tensor(out, dtype=torch.int64), missing, inferred, confidence

    def _type_index(self, t: TypeLike) -> int:
        if isinstance(t, bool) or not isinstance(t, (int, str)):
            raise TypeError(f"response type {t!r} must be a name, a label or an index")
        if isinstance(t, int):
            if not 0 <= t < len(self.spec.response_types):
                raise ValueError(f"response type index {t} outside [0, {len(self.spec.response_types)})")
            return t
        try:
            return self.spec.type_index(t)
        except KeyError as e:
            raise ValueError(str(e.args[0])) from None

    def _infer(self, prompts):
        """Prompt-proposition grades per completion, each distinct prompt graded once (a GRPO
        group shares one prompt, and so one inferred type)."""
        keys = [json.dumps(p, sort_keys=True) for p in prompts]
        first: dict = {}
        for i, k in enumerate(keys):
            first.setdefault(k, i)
        uniq = list(first.values())
        g = self.grader.grade_prompts([prompts[i] for i in uniq])
        row = {k: j for j, k in enumerate(first)}
        take = torch.tensor([row[k] for k in keys])
        return Grades(g.p_yes[take], g.mass[take], g.propositions)

    def _run(self, prompts, completions, response_types, rm_scores):
        n = len(completions)
        if len(prompts) != n:
            raise ValueError(f"got {len(prompts)} prompts but {n} completions")
        rt, missing, inferred, confidence = self._types(prompts, response_types, n)
        rm = None
        if rm_scores is not None:
            rm = torch.as_tensor(rm_scores, dtype=torch.float64).reshape(-1)
            if rm.shape != (n,) or not bool(torch.isfinite(rm).all()):
                raise ValueError(f"rm_scores must be {n} finite numbers")
        grades = self.grader.grade(prompts, completions)
        if n == 0:
            return _Scored(grades, rt, torch.zeros(0), torch.zeros(0, len(self.spec.feature_names)), rm, {})
        out = rbr_reward_from_props(grades.p_yes, self._conj, self.weights.weights, rt, self.weights.bias)
        inferred_rows = {i: (dict(zip(inferred.propositions, inferred.p_yes[j].tolist())), confidence[j])
                         for j, i in enumerate(missing)}
        return _Scored(grades, rt, out.reward, out.features, rm, inferred_rows)

    def score(self, prompts: Sequence, completions: Sequence,
              response_types: Optional[Sequence[Optional[TypeLike]]] = None,
              rm_scores: Optional[Sequence[float]] = None) -> list[float]:
        """One reward per completion: the RBR reward, plus ``rm_scores`` when given. Where
        ``response_types`` is None or has a None entry, that prompt's type is inferred by the grader
        (``RuleSpec.infer_types``); a given type is used as is."""
        run = self._run(prompts, completions, response_types, rm_scores)
        total = run.reward.double() + (run.rm if run.rm is not None else 0.0)
        return total.tolist()

    def score_groups(self, prompts: Sequence, completions: Sequence, groups: Sequence,
                     response_types: Optional[Sequence[Optional[TypeLike]]] = None, k: int = 3) -> list[float]:
        """Data-adaptive scores for groups of completions of one prompt (GRPO): in each group the k
        propositions relevant to its response type whose probabilities spread most across the group
        score every member (mean signed probability, see ``reward.adaptive``). One score per
        completion."""
        from . import adaptive
        if len(groups) != len(completions):
            raise ValueError(f"groups has {len(groups)} entries for {len(completions)} completions")
        run = self._run(prompts, completions, response_types, None)
        grades, rt = run.grades, run.response_type
        out = [0.0] * len(completions)
        members: dict = {}
        for i, g in enumerate(groups):
            members.setdefault(g, []).append(i)
        types = self.spec.response_type_names
        for rows in members.values():
            kinds = {int(rt[i]) for i in rows}
            if len(kinds) != 1:
                raise ValueError(f"a group mixes response types {sorted(types[t] for t in kinds)}; one prompt, one type")
            d = adaptive.directions(self.spec, types[kinds.pop()])
            for i, s in zip(rows, adaptive.group_scores(grades.p_yes[rows], d, k).tolist()):
                out[i] = s
        return out

    def details(self, prompts: Sequence, completions: Sequence,
                response_types: Optional[Sequence[Optional[TypeLike]]] = None,
                rm_scores: Optional[Sequence[float]] = None) -> list[dict]:
        """Per completion: reward, RBR part, RM score, response type (and where it came from: "given" or
        "inferred", with the prompt propositions' probabilities and ``response_type_confidence``, the
        probability of the inferred type; 1.0 when given), the probability of every proposition,
        derived proposition and class of its type (best class first), and ``answered_by``: how the
        grader answered each proposition ("head", "prior", "question" or "served")."""
        run = self._run(prompts, completions, response_types, rm_scores)
        rm, inferred = run.rm, run.inferred
        names = self.spec.feature_names
        P = len(self.spec.propositions)
        types = self.spec.response_type_names
        answered_by = {n: self.grader.answered_by[n] for n in names[:P]}
        out = []
        for i in range(len(completions)):
            t = types[int(run.response_type[i])]
            f = run.features[i].tolist()
            out.append({
                "reward": float(run.reward[i]) + (float(rm[i]) if rm is not None else 0.0),
                "rbr": float(run.reward[i]), "rm_score": float(rm[i]) if rm is not None else None,
                "response_type": t, "response_type_source": "inferred" if i in inferred else "given",
                "response_type_confidence": inferred[i][1] if i in inferred else 1.0,
                **({"prompt_propositions": inferred[i][0]} if i in inferred else {}),
                "propositions": dict(zip(names[:P], f[:P])),
                "answer_mass": dict(zip(run.grades.propositions, run.grades.mass[i].tolist())),
                "derived": {n: f[j] for j, n in enumerate(names) if P <= j and "/" not in n},
                "classes": {n.split("/", 1)[1]: f[j] for j, n in enumerate(names) if n.startswith(t + "/")},
                "answered_by": answered_by,
            })
        return out
