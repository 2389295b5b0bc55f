"""RBR weights: one row of feature weights (and a bias) per response type, tied to the structure of
the spec they were made for (``RuleSpec.structure``: its propositions, classes and rules, not their
wording), saved as JSON atomically."""
from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Union

import torch

from ..errors import UserError
from ..io import atomic_write_text, read_text
from ..rules import QUALITY_ORDER, RuleSpec

# Hand-set class weights (before any fitting): better classes earn more, disallowed content costs most.
CLASS_PRIOR = {"ideal": 1.0, "minimum_acceptable_style": 0.5, "unacceptable_completion": -0.5,
               "illogical_completion": -0.75, "disallowed_completion": -1.0}
assert set(CLASS_PRIOR) == set(QUALITY_ORDER)


@dataclass
class RewardWeights:
    spec_fingerprint: str
    feature_names: list[str]
    response_types: list[str]
    weights: torch.Tensor  # [K, F] float32
    bias: torch.Tensor  # [K] float32
    spec_structure: str = ""  # RuleSpec.structure() (empty in files written before it was recorded)

    @classmethod
    def hand_set(cls, spec: RuleSpec) -> "RewardWeights":
        """Weights from the class order alone: each class of a type weighs ``CLASS_PRIOR``."""
        names = spec.feature_names
        w = torch.zeros(len(spec.response_types), len(names))
        for k, t in enumerate(spec.response_types.values()):
            for c in t.classes:
                w[k, names.index(f"{t.name}/{c.name}")] = CLASS_PRIOR[c.name]
        return cls(spec.fingerprint(), names, spec.response_type_names, w, torch.zeros(len(spec.response_types)),
                   spec.structure())

    def fits(self, spec: RuleSpec) -> bool:
        """Whether these weights apply to ``spec``: the same propositions, derived propositions,
        response types and classes (a reworded question or example does not matter)."""
        same = self.spec_structure == spec.structure() if self.spec_structure else self.spec_fingerprint == spec.fingerprint()
        return same and self.feature_names == spec.feature_names

    def check(self, spec: RuleSpec) -> None:
        if not self.fits(spec):
            missing = sorted(set(spec.feature_names) - set(self.feature_names))
            extra = sorted(set(self.feature_names) - set(spec.feature_names))
            diff = "; ".join(x for x in (f"the spec adds {missing}" if missing else "",
                                         f"the spec lacks {extra}" if extra else "") if x) or \
                "other literals in its derived propositions, classes or type rules"
            raise UserError(f"these weights were fitted for a spec with other propositions or classes ({diff}; "
                            f"spec {spec.source}); refit them with `rbr-fast fit`, or use weights 'hand'")

    def save(self, path: Union[str, Path]) -> None:
        """Write JSON atomically (never half a file)."""
        doc = {"format": "rbr_fast.weights/1", "spec_fingerprint": self.spec_fingerprint,
               "spec_structure": self.spec_structure,
               "feature_names": self.feature_names, "response_types": self.response_types,
               "weights": {t: dict(zip(self.feature_names, self.weights[k].tolist()))
                           for k, t in enumerate(self.response_types)},
               "bias": dict(zip(self.response_types, self.bias.tolist()))}
        atomic_write_text(path, json.dumps(doc, indent=1))

    @classmethod
    def named(cls, name: Union[str, Path], spec: RuleSpec) -> "RewardWeights":
        """``"hand"``: ``hand_set``; ``"xstest"``: the shipped weights, fitted on XSTest (``rbr-fast eval``)
        for the default spec and the embedded grader; anything else: a weights file for ``load``."""
        if name == "hand":
            return cls.hand_set(spec)
        return cls.load(resources.files("rbr_fast.reward") / "xstest_weights.json" if name == "xstest" else name, spec)

    @classmethod
    def load(cls, path: Union[str, Path], spec: RuleSpec) -> "RewardWeights":
        """Read weights saved by ``save``; refuses weights made for a different spec and any entry
        that is not a finite float32 (NaN, inf, or a number that overflows float32)."""
        path = Path(path)
        try:
            text = read_text(path)
        except OSError as e:
            raise UserError(f"{path}: cannot read the weights ({e.strerror})") from None
        try:
            doc = json.loads(text)
            names, types = doc["feature_names"], doc["response_types"]
            rows = [[_finite(doc["weights"][t][n], path, f"weights.{t}.{n}") for n in names] for t in types]
            bias = [_finite(doc["bias"][t], path, f"bias.{t}") for t in types]
            out = cls(doc["spec_fingerprint"], names, types, torch.tensor(rows, dtype=torch.float32),
                      torch.tensor(bias, dtype=torch.float32), str(doc.get("spec_structure", "")))
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise UserError(f"{path}: not a readable rbr_fast weights file ({type(e).__name__}: {e})") from None
        try:
            out.check(spec)
        except UserError as e:
            raise UserError(f"{path}: {e}") from None
        return out


_FLOAT32_MAX = torch.finfo(torch.float32).max


def _finite(v, path: Path, entry: str) -> float:
    """A weights-file entry as a float that float32 holds (JSON has NaN, Infinity and 1e39)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not abs(v) <= _FLOAT32_MAX:
        raise UserError(f"{path}: {entry} = {v!r}: not a finite float32 number")
    return float(v)
