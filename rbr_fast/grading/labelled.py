"""Labelled rows for training proposition heads: (conversation, completion, labels), a group id for
cross-validation (rows of one conversation or one prompt share it) and where the row came from.

Shipped training data for the default spec (``default_rows``):

- **RBR gold set**: every human proposition label, and the request questions implied by the row's
  response type under the spec's type rules (``RuleSpec.type_labels``: a ``Hard Refuse`` row's
  user asks for harmful help and does not mention self-harm, a ``Comply`` row's does neither, a
  ``Safe Refuse 2`` row's mentions self-harm; ``Safe Refuse 1``, which no rule infers, labels none).
- **XSTest**, each of the three completion sets, with only what its human label determines:

  ==================  ==============  ==================  ===================
  human label         fully_complies  partially_complies  inability_to_comply
  ==================  ==============  ==================  ===================
  1_full_compliance   yes             yes                 no
  2_full_refusal      no              no                  (not determined)
  3_partial_refusal   no              yes                 (not determined)
  ==================  ==============  ==================  ===================

  (in the gold set every fully compliant reply is also partially compliant), and the request
  questions implied by the prompt's desired type (safe -> comply, unsafe -> hard refusal).

A label is a float in [0, 1]: 0/1 for human labels, P(yes) for a teacher's (distillation).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from ..datasets import RESPONSE_TYPE, XSTestItem, load_xstest, read_jsonl
from ..rules import RuleSpec

XSTEST_LABELS = {"1_full_compliance": {"fully_complies": 1.0, "partially_complies": 1.0, "inability_to_comply": 0.0},
                 "2_full_refusal": {"fully_complies": 0.0, "partially_complies": 0.0},
                 "3_partial_refusal": {"fully_complies": 0.0, "partially_complies": 1.0}}


@dataclass
class LabelledRow:
    conversation: Any
    completion: Any
    labels: dict[str, float]  # proposition (or prompt proposition) -> label in [0, 1]
    group: str  # rows of one group go to the same cross-validation fold
    source: str  # "gold", "xstest/gpt4", a file name, ...

    @property
    def key(self) -> str:
        """A hash of the text (conversation and completion): the feature cache's key."""
        return content_key(self.conversation, self.completion)


def content_key(conversation: Any, completion: Any) -> str:
    return hashlib.sha1(json.dumps([conversation, completion], sort_keys=True).encode()).hexdigest()


def _known(spec: RuleSpec, labels: dict[str, float]) -> dict[str, float]:
    names = set(spec.propositions) | set(spec.prompt_propositions)
    return {k: v for k, v in labels.items() if k in names}


def _type_labels(spec: RuleSpec, response_type: Optional[str]) -> dict[str, float]:
    if not response_type or not spec.type_rules:
        return {}
    try:
        return {k: float(v) for k, v in spec.type_labels(response_type).items()}
    except KeyError:  # a type this spec does not have: its request questions stay unlabelled
        return {}


def read_labelled(path: Union[str, Path], spec: RuleSpec, source: Optional[str] = None,
                  limit: Optional[int] = None) -> list[LabelledRow]:
    """Rows of a jsonl file in the gold format (conversation / prompt, completion, ``propositions``:
    name -> bool, optional ``response_type``). Labels of names the spec lacks are dropped."""
    path = Path(path)
    out = []
    for i, ex in enumerate(read_jsonl(path, limit)):
        labels = {**_type_labels(spec, ex.response_type), **{k: float(v) for k, v in ex.labels.items()}}
        out.append(LabelledRow(ex.conversation, ex.completion, _known(spec, labels), f"{source or path.name}:{i}",
                               source or path.name))
    return out


def xstest_rows(spec: RuleSpec, items: Optional[Sequence[XSTestItem]] = None) -> list[LabelledRow]:
    """XSTest completions (default: all of the shipped ones) with the labels their human label
    determines, one row per item, in order."""
    return [LabelledRow(it.prompt, it.completion,
                        _known(spec, {**_type_labels(spec, RESPONSE_TYPE[it.label]), **XSTEST_LABELS[it.human]}),
                        f"xstest:{it.prompt_id}", f"xstest/{it.model}")
            for it in (load_xstest() if items is None else items)]


def default_rows(spec: Optional[RuleSpec] = None) -> list[LabelledRow]:
    """The shipped training data: the RBR gold set and the three XSTest completion sets."""
    from .. import data
    spec = spec or RuleSpec.default()
    return read_labelled(data.gold(), spec, "gold") + xstest_rows(spec)
