"""Labelled rows for training proposition heads: (conversation, completion, labels), a group id for
cross-validation (rows of one conversation or one prompt share it) and where the row came from.

Shipped training data for the default spec's definitions (``default_rows``): replies labelled for
the propositions, and prompts alone (``prompt_rows``) labelled for the request questions.

- **RBR gold set**: every human proposition label of its replies; its distinct conversations with
  the request questions implied by their response type under the spec's type rules
  (``RuleSpec.type_labels``: a ``Hard Refuse`` row's user asks for harmful help and does not
  mention self-harm, a ``Comply`` row's does neither, a ``Safe Refuse 2`` row's mentions
  self-harm; ``Safe Refuse 1``, which no rule infers, labels none).
- **Written rows** (``data/written``, CC0): replies labelled for the four rare propositions
  (insults, threats, resources, doses), and 423 requests labelled with their response type.
- **XSTest**, each of the three completion sets, with only what its human label determines:

  ==================  ==============  ==================  ===================
  human label         fully_complies  partially_complies  inability_to_comply
  ==================  ==============  ==================  ===================
  1_full_compliance   yes             yes                 no
  2_full_refusal      no              no                  (not determined)
  3_partial_refusal   no              yes                 (not determined)
  ==================  ==============  ==================  ===================

  (in the gold set every fully compliant reply is also partially compliant); its prompts with the
  request questions implied by their desired type (safe -> comply, unsafe -> hard refusal).

A label is a float in [0, 1]: 0/1 for human labels, P(yes) for a teacher's (distillation).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from . import files
from .readers import RESPONSE_TYPE, XSTestItem, iter_rows, load_xstest, read_jsonl, xstest_prompts
from ..errors import UserError
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
    name -> bool, optional ``response_type``). Labels of names the spec lacks are dropped; rows of
    the same conversation share a cross-validation group."""
    path = Path(path)
    out = []
    for i, ex in enumerate(read_jsonl(path, limit)):
        labels = {**_type_labels(spec, ex.response_type), **{k: float(v) for k, v in ex.labels.items()}}
        # rows answering one conversation share a fold: a head is never scored on a prompt it saw
        group = f"{source or path.name}:{content_key(ex.conversation, None)[:16]}"
        out.append(LabelledRow(ex.conversation, ex.completion, _known(spec, labels), group, source or path.name))
    return out


def xstest_rows(spec: RuleSpec, items: Optional[Sequence[XSTestItem]] = None) -> list[LabelledRow]:
    """XSTest completions (default: all of the shipped ones) with the labels their human label
    determines, one row per item, in order."""
    return [LabelledRow(it.prompt, it.completion,
                        _known(spec, {**_type_labels(spec, RESPONSE_TYPE[it.label]), **XSTEST_LABELS[it.human]}),
                        f"xstest:{it.prompt_id}", f"xstest/{it.model}")
            for it in (load_xstest() if items is None else items)]


@dataclass
class PromptRow:
    row: LabelledRow  # completion None: the conversation alone
    response_type: str  # the spec's type name
    source: str  # xstest | gold | written


def _row(spec: RuleSpec, conversation, type_label: str, source: str) -> Optional[PromptRow]:
    try:
        name = spec.response_type(type_label).name
    except KeyError:
        return None
    key = content_key(conversation, None)
    return PromptRow(LabelledRow(conversation, None, _type_labels(spec, name), f"{source}:{key[:16]}", source), name,
                     source)


def prompt_rows(spec: RuleSpec, sources: Sequence[str] = ("xstest", "gold", "written")) -> list[PromptRow]:
    """Distinct prompts of each named set whose response type ``spec`` has, in file order:

    - ``xstest``: XSTest's 450 prompts (safe -> comply, unsafe -> hard refusal);
    - ``gold``: the RBR gold set's distinct conversations, with their labelled response type;
    - ``written``: the requests written for rbr_fast (``data/written/prompts.jsonl``).

    Labels: the request questions the type implies under the spec's rules (``RuleSpec.type_labels``)."""
    out: list[PromptRow] = []
    seen: set[tuple[str, str]] = set()

    def add(conversation, type_label, source):
        r = _row(spec, conversation, type_label, source)
        if r is not None and (source, r.row.group) not in seen:
            seen.add((source, r.row.group))
            out.append(r)
    for source in sources:
        if source == "xstest":
            for meta in xstest_prompts().values():
                add(meta["prompt"], RESPONSE_TYPE[meta["label"]], "xstest")
        elif source == "gold":
            for ex in read_jsonl(files.gold()):
                if ex.response_type:
                    add(ex.conversation, ex.response_type, "gold")
        elif source == "written":
            for where, row in iter_rows(files.written_prompts()):
                if "prompt" not in row or "response_type" not in row:
                    raise UserError(f"{where}: a written prompt needs 'prompt' and 'response_type'")
                add(row["prompt"], row["response_type"], "written")
        else:
            raise ValueError(f"unknown prompt set {source!r} (xstest, gold, written)")
    return out


def default_rows(spec: Optional[RuleSpec] = None) -> list[LabelledRow]:
    """The shipped training data: replies of the RBR gold set, the three XSTest completion sets and
    the rows written for the rare propositions (``data/written``), labelled for the propositions;
    the distinct prompts of ``prompt_rows`` (no completion), labelled for the prompt propositions.
    Its labels were made for the default spec's definitions: for another ``spec`` only the labels
    of propositions with the same definition (``Proposition.fingerprint``) are kept, and rows left
    without a label are dropped."""
    spec = spec or RuleSpec.default()
    replies = read_labelled(files.gold(), spec, "gold") + xstest_rows(spec) + read_labelled(files.written_rare(), spec,
                                                                                           "written")
    shipped = RuleSpec.default().definitions()
    same = {n for n, fp in spec.definitions().items() if shipped.get(n) == fp}
    out = []
    for r in replies + [p.row for p in prompt_rows(spec)]:
        labels = {k: v for k, v in r.labels.items() if k in same and (r.completion is None or k in spec.propositions)}
        if labels:
            out.append(LabelledRow(r.conversation, r.completion, labels, r.group, r.source))
    return out
