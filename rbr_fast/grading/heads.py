"""Trained proposition heads: per proposition, a small model over pooled hidden states of the grader
(``features``) that gives a calibrated P(yes), in place of asking the question.

A head reads the concatenation of some (layer, pooling) slices of the feature tensor, standardises
it, applies a linear map (or a one-hidden-layer MLP) to a logit, and calibrates the logit with
Platt scaling fitted on held-out folds: ``p = sigmoid(a * logit + b)``.

``PropositionHeads`` is saved as one safetensors file: the tensors of every head, and in its
metadata the recipe of each head, the definition (``Proposition.fingerprint``) each head and prior
was trained for, and the base model's signature. Heads are refused for another model; for a spec,
each proposition whose definition matches gets its head (``answerable``), whatever else the spec
holds, so editing one rule leaves every other head in place.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

from ..errors import UserError
from ..io import atomic_write, dumps
from .features import POOLINGS

FORMAT = "rbr_fast.heads/2"
FORMATS = ("rbr_fast.heads/1", FORMAT)  # 1: no per-proposition definitions (the whole spec must match)


@dataclass
class Head:
    """One proposition's head. ``inputs``: (layer, pooling) slices concatenated in this order."""
    inputs: tuple[tuple[int, str], ...]
    mean: torch.Tensor  # [D] standardisation
    scale: torch.Tensor  # [D]
    w1: torch.Tensor  # [D] (linear) or [D, hidden] (mlp)
    b1: torch.Tensor  # [] or [hidden]
    w2: Optional[torch.Tensor] = None  # [hidden] (mlp)
    b2: Optional[torch.Tensor] = None  # []
    platt: tuple[float, float] = (1.0, 0.0)  # calibration of the logit: a * logit + b

    @property
    def kind(self) -> str:
        return "linear" if self.w2 is None else "mlp"

    def logit(self, x: torch.Tensor) -> torch.Tensor:
        """Uncalibrated logits of ``x`` ``[N, D]`` (already gathered by ``select``)."""
        z = (x.double() - self.mean.double()) / self.scale.double()
        if self.w2 is None:
            return z @ self.w1.double() + self.b1.double()
        return torch.relu(z @ self.w1.double() + self.b1.double()) @ self.w2.double() + self.b2.double()

    def prob(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.platt
        return torch.sigmoid(a * self.logit(x) + b).float()


def select(features: torch.Tensor, layers: Sequence[int], inputs: Sequence[tuple[int, str]]) -> torch.Tensor:
    """``[N, D]``: the (layer, pooling) slices of ``features`` ``[N, len(layers), len(POOLINGS), H]`` side by side."""
    return torch.cat([features[:, layers.index(l), POOLINGS.index(p)] for l, p in inputs], 1)


@dataclass
class PropositionHeads:
    """Heads for some propositions and prompt propositions, each tied to the definition it was
    trained for, all tied to one base model.

    Attributes:
        heads: proposition name -> ``Head``.
        priors: proposition name -> base rate of its labels, for names with too few labels for a
            head: a calibrated constant the grader may answer with instead of asking (see
            ``Grader(priors=...)``).
        spec_fingerprint: ``RuleSpec.fingerprint()`` of the spec they were trained with (informative).
        model: ``Grader.model_signature()`` of the base model (compared with ``same_model``).
        head_ids: the token ids of the grading instructions the features were read after.
        report: training summary (data, cross-validated scores per proposition, skipped names).
        definitions: proposition name -> ``Proposition.fingerprint()`` its head or prior was trained
            for (empty in files of format 1, which match a spec only as a whole).
    """
    heads: dict[str, Head]
    spec_fingerprint: str
    model: dict
    head_ids: list[int]
    priors: dict[str, float] = field(default_factory=dict)
    report: dict = field(default_factory=dict)
    definitions: dict[str, str] = field(default_factory=dict)
    source: str = "<memory>"  # the file it was loaded from, for messages

    @property
    def layers(self) -> list[int]:
        """Every decoder layer some head reads, ascending."""
        return sorted({l for h in self.heads.values() for l, _ in h.inputs})

    def predict(self, features: torch.Tensor, names: Sequence[str]) -> torch.Tensor:
        """``[N, len(names)]`` calibrated P(yes) from ``features`` ``[N, len(self.layers), len(POOLINGS), H]``."""
        layers = self.layers
        if not names:
            return torch.zeros(features.shape[0], 0)
        return torch.stack([self.heads[n].prob(select(features, layers, self.heads[n].inputs)) for n in names], 1)

    def check(self, grader) -> None:
        """Raise ``UserError`` (a ``ValueError``) unless ``grader`` has the base model and prompt
        layout these heads were trained on."""
        problem = same_model(self.model, grader.model_signature())
        if problem:
            raise UserError(f"{self.source}: these heads were trained on another base model ({problem}); train heads for this "
                             "model with `rbr-fast train-grader --model ...`")
        if self.head_ids != grader.layout.head:
            raise UserError(f"{self.source}: these heads were trained after other grading instructions (another "
                            "tokenizer or chat template); retrain them for this grader")

    def answerable(self, spec) -> tuple[dict[str, str], dict[str, str]]:
        """``(answers, why_not)`` for the propositions and prompt propositions of ``spec``:
        ``answers[name]`` is "head" or "prior" where this file holds one trained for that exact
        definition; ``why_not[name]`` says why a name has neither."""
        mine = spec.definitions()
        whole = not self.definitions and self.spec_fingerprint == spec.fingerprint()  # format 1
        answers, why_not = {}, {}
        for name, fp in mine.items():
            have = name in self.heads or name in self.priors
            if have and (whole or self.definitions.get(name) == fp):
                answers[name] = "head" if name in self.heads else "prior"
            else:
                why_not[name] = ("new proposition" if not have else
                                 "question changed" if self.definitions else "trained for another spec")
        return answers, why_not

    # ------------------------------------------------------------------------------------- files
    def save(self, path: Union[str, Path]) -> Path:
        """Write one safetensors file atomically."""
        from safetensors.torch import save_file
        tensors, recipes = {}, {}
        for name, h in self.heads.items():
            for k in ("mean", "scale", "w1", "b1", "w2", "b2"):
                t = getattr(h, k)
                if t is not None:
                    tensors[f"{name}.{k}"] = t.float().contiguous()
            recipes[name] = {"inputs": [list(x) for x in h.inputs], "platt": list(h.platt)}
        meta = {"format": FORMAT, "spec_fingerprint": self.spec_fingerprint, "model": json.dumps(self.model),
                "head_ids": json.dumps(self.head_ids), "heads": json.dumps(recipes), "priors": json.dumps(self.priors),
                "report": dumps(self.report), "definitions": json.dumps(self.definitions)}
        return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))

    @classmethod
    def load(cls, path: Union[str, Path]) -> "PropositionHeads":
        """Read a file written by ``save``; a damaged or foreign file raises ``UserError`` naming it."""
        from safetensors import safe_open
        path = Path(path)
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                if meta.get("format") not in FORMATS:
                    raise ValueError(f"format {meta.get('format')!r}, expected one of {FORMATS}")
                tensors = {k: f.get_tensor(k) for k in f.keys()}
            heads = {}
            for name, r in json.loads(meta["heads"]).items():
                t = {k: tensors.get(f"{name}.{k}") for k in ("mean", "scale", "w1", "b1", "w2", "b2")}
                heads[name] = Head(tuple((int(l), str(p)) for l, p in r["inputs"]), platt=tuple(r["platt"]), **t)
            out = cls(heads, meta["spec_fingerprint"], json.loads(meta["model"]), json.loads(meta["head_ids"]),
                      {k: float(v) for k, v in json.loads(meta.get("priors", "{}")).items()},
                      json.loads(meta.get("report", "{}")), json.loads(meta.get("definitions", "{}")), str(path))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such heads file") from None
        except Exception as e:  # noqa: BLE001  any parse problem is the file's
            raise UserError(f"{path}: not a readable rbr_fast heads file ({type(e).__name__}: {e})") from None
        bad = [n for n, h in out.heads.items()
               if not all(bool(torch.isfinite(t).all()) for t in (h.mean, h.scale, h.w1, h.b1, h.w2, h.b2) if t is not None)
               or not all(math.isfinite(v) for v in h.platt)]
        bad += [n for n, v in out.priors.items() if not 0 <= v <= 1]
        if bad:
            raise UserError(f"{path}: heads {bad} hold NaN, inf or a prior outside [0, 1]")
        return out


def same_model(a: dict, b: dict, rtol: float = 1e-2) -> Optional[str]:
    """None when two ``Grader.model_signature()`` describe the same weights (within ``rtol``, which
    bf16 rounding stays far inside), else what differs."""
    for k in ("model_type", "layers", "hidden", "vocab"):
        if a.get(k) != b.get(k):
            return f"{k} {a.get(k)!r} vs {b.get(k)!r}"
    wa, wb = a.get("weights", []), b.get("weights", [])
    if len(wa) != len(wb) or any(abs(x - y) > rtol * (abs(x) + abs(y)) + 1e-3 for x, y in zip(wa, wb)):
        return "different weights"
    return None

