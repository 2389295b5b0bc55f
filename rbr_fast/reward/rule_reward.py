"""``RuleBasedReward``: grader -> proposition probabilities -> features -> RBR reward (+ RM score)."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

from ..grading import Grader
from ..ops import rbr_reward_from_props
from ..rules import RuleSpec
from .weights import RewardWeights

TypeLike = Union[str, int]


class RuleBasedReward:
    """The RBR reward of a rule spec.

    Args:
        grader: answers the spec's propositions (its ``spec`` is used unless ``spec`` is given, which
            must then be the same spec).
        weights: per-response-type feature weights (default: ``RewardWeights.hand_set(spec)``).
    """

    def __init__(self, grader: Grader, spec: Optional[RuleSpec] = None, weights: Optional[RewardWeights] = None):
        self.grader = grader
        self.spec = spec or grader.spec
        if self.spec.fingerprint() != grader.spec.fingerprint():
            raise ValueError("the grader asks another spec's questions; build the Grader with spec=... too")
        self.weights = weights or RewardWeights.hand_set(self.spec)
        self.weights.check(self.spec)
        self._conj = self.spec.conjunctions()

    def _types(self, response_types: Sequence[TypeLike], n: int) -> torch.Tensor:
        if isinstance(response_types, (str, bytes)) or len(response_types) != n:
            raise ValueError(f"response_types must be a sequence of {n} names, labels or indices")
        out = []
        for t in response_types:
            if isinstance(t, bool) or not isinstance(t, (int, str)):
                raise TypeError(f"response type {t!r} must be a name, a label or an index")
            if isinstance(t, int):
                if not 0 <= t < len(self.spec.response_types):
                    raise ValueError(f"response type index {t} outside [0, {len(self.spec.response_types)})")
                out.append(t)
            else:
                try:
                    out.append(self.spec.type_index(t))
                except KeyError as e:
                    raise ValueError(str(e.args[0])) from None
        return torch.tensor(out, dtype=torch.int64)

    def _infer(self, prompts):
        """Prompt-proposition grades per completion, each distinct prompt graded once (a GRPO
        group shares one prompt, and so one inferred type)."""
        import json
        from ..grading import Grades
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
        inferred = None
        if response_types is None:
            if not self.spec.type_rules:
                raise ValueError("response_types is required: give one per completion (e.g. 'hard_refuse' or "
                                 "'Comply'); this spec has no response_type_rules to infer it from")
            inferred = self._infer(prompts) if n else None
            response_types = self.spec.infer_types(inferred.p_yes) if n else []
        rt = self._types(response_types, n)
        rm = None
        if rm_scores is not None:
            rm = torch.as_tensor(rm_scores, dtype=torch.float64).reshape(-1)
            if rm.shape != (n,) or not bool(torch.isfinite(rm).all()):
                raise ValueError(f"rm_scores must be {n} finite numbers")
        grades = self.grader.grade(prompts, completions)
        if n == 0:
            return grades, rt, torch.zeros(0), torch.zeros(0, len(self.spec.feature_names)), rm, inferred
        out = rbr_reward_from_props(grades.p_yes, self._conj, self.weights.weights, rt, self.weights.bias)
        return grades, rt, out.reward, out.features, rm, inferred

    def score(self, prompts: Sequence, completions: Sequence, response_types: Optional[Sequence[TypeLike]] = None,
              rm_scores: Optional[Sequence[float]] = None) -> list[float]:
        """One reward per completion: the RBR reward, plus ``rm_scores`` when given. Without
        ``response_types`` each prompt's type is inferred by the grader (``RuleSpec.infer_types``)."""
        _, _, reward, _, rm, _ = self._run(prompts, completions, response_types, rm_scores)
        total = reward.double() + (rm if rm is not None else 0.0)
        return total.tolist()

    def score_groups(self, prompts: Sequence, completions: Sequence, groups: Sequence,
                     response_types: Optional[Sequence[TypeLike]] = None, k: int = 3) -> list[float]:
        """Data-adaptive scores for groups of completions of one prompt (GRPO): in each group the k
        propositions relevant to its response type whose probabilities spread most across the group
        score every member (mean signed probability, see ``reward.adaptive``). One score per
        completion."""
        from . import adaptive
        if len(groups) != len(completions):
            raise ValueError(f"groups has {len(groups)} entries for {len(completions)} completions")
        grades, rt, _, _, _, _ = self._run(prompts, completions, response_types, None)
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

    def details(self, prompts: Sequence, completions: Sequence, response_types: Optional[Sequence[TypeLike]] = None,
                rm_scores: Optional[Sequence[float]] = None) -> list[dict]:
        """Per completion: reward, RBR part, RM score, response type (and where it came from), and the
        probability of every proposition, derived proposition and class of its type."""
        grades, rt, reward, feats, rm, inferred = self._run(prompts, completions, response_types, rm_scores)
        names = self.spec.feature_names
        P = len(self.spec.propositions)
        types = self.spec.response_type_names
        out = []
        for i in range(len(completions)):
            t = types[int(rt[i])]
            f = feats[i].tolist()
            out.append({
                "reward": float(reward[i]) + (float(rm[i]) if rm is not None else 0.0),
                "rbr": float(reward[i]), "rm_score": float(rm[i]) if rm is not None else None,
                "response_type": t, "response_type_source": "given" if inferred is None else "inferred",
                **({} if inferred is None else
                   {"prompt_propositions": dict(zip(inferred.propositions, inferred.p_yes[i].tolist()))}),
                "propositions": dict(zip(names[:P], f[:P])),
                "answer_mass": dict(zip(grades.propositions, grades.mass[i].tolist())),
                "derived": {n: f[j] for j, n in enumerate(names) if P <= j and "/" not in n},
                "classes": {n.split("/", 1)[1]: f[j] for j, n in enumerate(names) if n.startswith(t + "/")},
            })
        return out
