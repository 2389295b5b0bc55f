"""Rule specs: propositions (yes/no questions for the grader), derived propositions, response types
and their ordered quality classes, loaded from YAML and validated.

Format (see ``default_spec.yaml``)::

    propositions:
      apology:
        question: Does the response apologise ...?
        examples: [{completion: "...", answer: yes}, ...]
        answered_by: served     # optional: head, prior, question or served (see ``ANSWERED_BY``)
    derived:                    # optional: conjunctions of literals
      polite_refusal: [apology, inability_to_comply, not judgement]
    response_types:
      hard_refuse:
        label: Hard Refuse      # the name the labelled data uses (optional)
        classes:                # best first, in QUALITY_ORDER
          ideal: [apology, inability_to_comply, not judgement]
          disallowed_completion: [disallowed_content]

A literal is a proposition name (true) or ``not <name>`` (false). Every problem raises ``SpecError``
with ``file:line``, the key path and what is wrong.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from ..errors import UserError
from ..io import read_text, yaml_error

# Quality classes of the RBR paper, best first; a response type lists a subset, in this order.
QUALITY_ORDER = ("ideal", "minimum_acceptable_style", "unacceptable_completion", "illogical_completion",
                 "disallowed_completion")
DEFAULT_SPEC = Path(__file__).with_name("default_spec.yaml")
# An inferred response type with a lower ``RuleSpec.type_confidence`` counts as unsure (logged by the
# reward's metrics, reported by eval-grader): the items worth giving a response type for.
LOW_CONFIDENCE = 0.7


class SpecError(UserError):
    """A rule spec that cannot be used; the message names the file, line, key and problem."""


@dataclass(frozen=True)
class Literal:
    name: str
    positive: bool = True

    def __str__(self) -> str:
        return self.name if self.positive else f"not {self.name}"


@dataclass(frozen=True)
class Example:
    completion: str
    answer: bool


# How a grader may answer a proposition: a trained head, a constant prior, the in-process model
# asked the question, or a served model asked it (``grading.served``). A spec may pin one per
# proposition; unpinned ones take the grader's default (its head or prior if it has one).
ANSWERED_BY = ("head", "prior", "question", "served")


@dataclass(frozen=True)
class Proposition:
    name: str
    question: str
    examples: tuple[Example, ...] = ()
    answered_by: Optional[str] = None  # a pinned route (``ANSWERED_BY``); not part of the definition

    def definition(self) -> list:
        """What the proposition means to a grader: its question and examples."""
        return [self.question, [[e.completion, e.answer] for e in self.examples]]

    def fingerprint(self) -> str:
        """A hash of the name and ``definition``: a trained head answers a proposition only while
        this matches the one it was trained for (rewording the question or an example changes it)."""
        return _hash([self.name, self.definition()])


@dataclass(frozen=True)
class QualityClass:
    name: str
    literals: tuple[Literal, ...]


@dataclass(frozen=True)
class ResponseType:
    name: str
    label: str
    classes: tuple[QualityClass, ...]  # best first


@dataclass
class RuleSpec:
    """A validated rule spec. ``propositions`` are graded; ``derived`` are conjunctions of literals
    over propositions and other derived names (acyclic); classes may use both."""
    propositions: dict[str, Proposition]
    derived: dict[str, tuple[Literal, ...]]
    response_types: dict[str, ResponseType]
    source: str = "<memory>"
    _by_label: dict[str, str] = field(default_factory=dict, repr=False)
    # questions about the user's request, and the rules that pick a response type from them
    # (first rule whose literals hold; the last has none): how a type is inferred when not given
    prompt_propositions: dict[str, Proposition] = field(default_factory=dict)
    type_rules: tuple[tuple[str, tuple[Literal, ...]], ...] = ()

    @classmethod
    def load(cls, path: Union[str, Path]) -> "RuleSpec":
        """Load and validate a YAML spec file."""
        path = Path(path)
        try:
            text = read_text(path)
        except OSError as e:
            raise SpecError(f"{path}: cannot read the spec ({e.strerror})") from None
        except UserError as e:  # not UTF-8
            raise SpecError(str(e)) from None
        return cls.from_yaml(text, source=str(path))

    @classmethod
    def default(cls) -> "RuleSpec":
        """The safety spec shipped with the package (the RBR paper's behaviour policy; proposition
        names match the labels of the RBR gold data)."""
        return cls.load(DEFAULT_SPEC)

    @classmethod
    def from_yaml(cls, text: str, source: str = "<string>") -> "RuleSpec":
        try:
            doc = yaml.load(text, Loader=_loader(source))
        except yaml.YAMLError as e:
            raise SpecError(yaml_error(e, source)) from None
        return _Builder(source).build(doc)

    @property
    def proposition_names(self) -> list[str]:
        return list(self.propositions)

    def response_type(self, name_or_label: str) -> ResponseType:
        """A response type by its name or its data label (e.g. "hard_refuse" or "Hard Refuse")."""
        key = self._by_label.get(name_or_label, name_or_label)
        if key not in self.response_types:
            raise KeyError(f"unknown response type {name_or_label!r}; known: {sorted(self.response_types)} "
                           f"(labels {sorted(self._by_label)})")
        return self.response_types[key]

    def evaluate(self, literal: Literal, values: dict[str, bool]) -> bool:
        """Truth of a literal given proposition values (derived names are expanded)."""
        name = literal.name
        v = all(self.evaluate(x, values) for x in self.derived[name]) if name in self.derived else bool(values[name])
        return v if literal.positive else not v

    @property
    def response_type_names(self) -> list[str]:
        return list(self.response_types)

    def type_index(self, name_or_label: str) -> int:
        """Row of a response type in the reward's weight matrix."""
        return self.response_type_names.index(self.response_type(name_or_label).name)

    def _derived_order(self) -> list[str]:
        """Derived names, each after the derived names it uses."""
        out: list[str] = []

        def visit(name):
            if name in self.derived and name not in out:
                for lit in self.derived[name]:
                    visit(lit.name)
                out.append(name)
        for name in self.derived:
            visit(name)
        return out

    @property
    def feature_names(self) -> list[str]:
        """Columns of the reward's feature row: the propositions, the derived propositions, then
        ``type/class`` for every class of every response type."""
        return (self.proposition_names + self._derived_order()
                + [f"{t.name}/{c.name}" for t in self.response_types.values() for c in t.classes])

    def conjunctions(self, device=None):
        """The derived propositions and classes as a ``Conjunctions`` table over the propositions,
        in ``feature_names`` order (for ``ops.rbr_reward_from_props``)."""
        import torch

        from ..ops.reward import Conjunctions
        derived = self._derived_order()
        col = {n: i for i, n in enumerate(self.proposition_names + derived)}
        rows = [self.derived[n] for n in derived] + [c.literals for t in self.response_types.values() for c in t.classes]
        width = max((len(r) for r in rows), default=1)
        idx = torch.full((len(rows), width), -1, dtype=torch.int32)
        neg = torch.zeros(len(rows), width, dtype=torch.bool)
        for j, lits in enumerate(rows):
            for k, lit in enumerate(lits):
                idx[j, k], neg[j, k] = col[lit.name], not lit.positive
        return Conjunctions(idx.to(device), neg.to(device))

    def expand(self, literals) -> list[Literal]:
        """The literals with every positive derived name replaced by its parts, recursively (a
        negated conjunction has no such expansion and is kept as it is)."""
        out: list[Literal] = []
        for x in literals:
            out += self.expand(self.derived[x.name]) if x.name in self.derived and x.positive else [x]
        return out

    def infer_types(self, prompt_probs) -> list[str]:
        """Response type per row of ``prompt_probs`` (``[N, Q]`` P(yes) of ``prompt_propositions``,
        in spec order): the first rule whose literals all hold, a literal holding when its
        probability (p, or 1 - p when negated) is at least 0.5."""
        if not self.type_rules:
            raise ValueError(f"{self.source}: the spec has no response_type_rules to infer a response type from")
        names = list(self.prompt_propositions)
        if tuple(prompt_probs.shape[1:]) != (len(names),):
            raise ValueError(f"infer_types: need [N, {len(names)}] probabilities of {names}, got {tuple(prompt_probs.shape)}")
        if not bool(((prompt_probs >= 0) & (prompt_probs <= 1)).all()):
            raise ValueError("infer_types: probabilities must be in [0, 1] (NaN is not)")
        out = []
        for row in prompt_probs.tolist():
            val = dict(zip(names, row))
            out.append(next(t for t, lits in self.type_rules
                            if all((val[x.name] if x.positive else 1 - val[x.name]) >= 0.5 for x in lits)))
        return out

    def type_confidence(self, prompt_probs) -> list[float]:
        """Per row, the probability of the type ``infer_types`` picks: each rule decides with the
        probability that its literals hold and no rule before it holds (the propositions taken as
        independent), and a type's probability sums over the rules naming it."""
        import torch
        p = torch.as_tensor(prompt_probs, dtype=torch.float64)
        names = list(self.prompt_propositions)
        left = torch.ones(p.shape[0], dtype=torch.float64)  # P(no earlier rule holds)
        by_type = {t: torch.zeros_like(left) for t, _ in self.type_rules}
        for t, lits in self.type_rules:
            holds = torch.ones_like(left)
            for x in lits:
                q = p[:, names.index(x.name)]
                holds = holds * (q if x.positive else 1 - q)
            by_type[t] += left * holds
            left = left * (1 - holds)
        picked = self.infer_types(p)
        return [float(by_type[t][i]) for i, t in enumerate(picked)]

    def type_labels(self, response_type: str) -> dict[str, bool]:
        """Prompt-proposition values implied by a prompt's known response type under the type rules:
        the literals of the first rule naming the type hold, and each one-literal rule before it
        fails (a rule of several literals before it determines none of them). ``{}`` when no rule
        names the type. These label request questions for training a grader."""
        name = self.response_type(response_type).name
        out: dict[str, bool] = {}
        for t, lits in self.type_rules:
            if t == name:
                out.update({x.name: x.positive for x in lits})
                return out
            if len(lits) == 1:
                out[lits[0].name] = not lits[0].positive
        return {}

    def fingerprint(self) -> str:
        """A hash of everything the spec asks and derives (``structure`` and every proposition's
        question and examples): grade caches made for one spec are not reused for another."""
        doc = {**self._structure(), "propositions": {n: p.definition() for n, p in self.propositions.items()},
               "prompt_propositions": {n: p.definition() for n, p in self.prompt_propositions.items()}}
        return _hash(doc)

    def structure(self) -> str:
        """A hash of the spec without its wording: proposition and prompt-proposition names, derived
        literals, response types, labels and classes, type rules. Reward weights fitted for one spec
        apply to another with the same structure (a reworded question keeps it)."""
        return _hash(self._structure())

    def _structure(self) -> dict:
        return {"propositions": list(self.propositions),
                "derived": {n: [str(x) for x in lits] for n, lits in self.derived.items()},
                "types": {n: [t.label, [[c.name, [str(x) for x in c.literals]] for c in t.classes]]
                          for n, t in self.response_types.items()},
                "prompt_propositions": list(self.prompt_propositions),
                "type_rules": [[t, [str(x) for x in lits]] for t, lits in self.type_rules]}

    def definitions(self) -> dict[str, str]:
        """``Proposition.fingerprint`` of every proposition and prompt proposition, by name."""
        return {n: p.fingerprint() for n, p in {**self.propositions, **self.prompt_propositions}.items()}

    def classify(self, response_type: str, values: dict[str, bool]) -> Optional[str]:
        """The best class of ``response_type`` whose literals all hold, or None."""
        for c in self.response_type(response_type).classes:
            if all(self.evaluate(x, values) for x in c.literals):
                return c.name
        return None


def resolve_spec(spec: Union[RuleSpec, str, Path, None]) -> RuleSpec:
    """A ``RuleSpec`` from a spec, a YAML path, or None (the shipped default spec)."""
    return RuleSpec.load(spec) if isinstance(spec, (str, Path)) else (spec or RuleSpec.default())


def _hash(doc) -> str:
    import hashlib
    import json
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------ loading

class _Lined(dict):
    """A YAML mapping that remembers the line of each key (1-based) and its own."""
    line: int = 0
    key_lines: dict


def _loader(source: str):
    class Loader(yaml.SafeLoader):
        pass

    def mapping(loader, node):
        loader.flatten_mapping(node)
        d = _Lined()
        d.line, d.key_lines = node.start_mark.line + 1, {}
        for k_node, v_node in node.value:
            k = loader.construct_object(k_node, deep=True)
            if k in d:
                raise SpecError(f"{source}:{k_node.start_mark.line + 1}: duplicate key {k!r}")
            d[k] = loader.construct_object(v_node, deep=True)
            d.key_lines[k] = k_node.start_mark.line + 1
        return d

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return Loader


class _Builder:
    def __init__(self, source: str):
        self.source = source

    def fail(self, parent: Any, key: Any, path: str, problem: str):
        line = parent.key_lines.get(key, parent.line) if isinstance(parent, _Lined) else None
        where = f"{self.source}:{line}" if line else self.source
        raise SpecError(f"{where}: {path}: {problem}")

    def mapping(self, parent, key, path) -> _Lined:
        value = parent.get(key) if isinstance(parent, dict) else None
        if not isinstance(value, _Lined):
            self.fail(parent, key, path, f"must be a mapping, got {type(value).__name__}")
        return value

    def build(self, doc) -> RuleSpec:
        if not isinstance(doc, _Lined):
            raise SpecError(f"{self.source}: the spec must be a YAML mapping with `propositions` and `response_types`")
        keys = ("version", "propositions", "derived", "response_types", "prompt_propositions", "response_type_rules")
        unknown = set(doc) - set(keys)
        if unknown:
            k = sorted(unknown)[0]
            self.fail(doc, k, k, f"unknown top-level key (expected {', '.join(keys)})")
        props_node = self.mapping(doc, "propositions", "propositions")
        if not props_node:
            self.fail(doc, "propositions", "propositions", "no propositions")
        props = {name: self.proposition(props_node, name) for name in props_node}
        raw_derived = doc.get("derived") or _Lined()
        if not isinstance(raw_derived, _Lined):
            self.fail(doc, "derived", "derived", "must be a mapping of name -> list of literals")
        derived = {}
        for name in raw_derived:
            if name in props:
                self.fail(raw_derived, name, f"derived.{name}", "duplicate name: already a proposition")
            derived[name] = self.literals(raw_derived, name, f"derived.{name}", known=set(props) | set(raw_derived))
        self.check_acyclic(raw_derived, derived)
        types_node = self.mapping(doc, "response_types", "response_types")
        if not types_node:
            self.fail(doc, "response_types", "response_types", "no response types")
        known = set(props) | set(derived)
        types = {name: self.response_type(types_node, name, known) for name in types_node}
        labels: dict[str, str] = {}
        for t in types.values():
            if t.label in labels:
                self.fail(types_node[t.name], "label", f"response_types.{t.name}.label",
                          f"label {t.label!r} is used by {labels[t.label]!r} too")
            labels[t.label] = t.name
        prompt_props, rules = self.prompt_rules(doc, known, types)
        return RuleSpec(props, derived, types, self.source, labels, prompt_props, rules)

    def prompt_rules(self, doc, known, types):
        """``prompt_propositions`` and ``response_type_rules``: both or neither."""
        if "prompt_propositions" not in doc and "response_type_rules" not in doc:
            return {}, ()
        node = self.mapping(doc, "prompt_propositions", "prompt_propositions")
        props = {}
        for name in node:
            if name in known:
                self.fail(node, name, f"prompt_propositions.{name}", "duplicate name: already a proposition")
            props[name] = self.proposition(node, name, "prompt_propositions")
        raw = doc.get("response_type_rules")
        if not isinstance(raw, list) or not raw:
            self.fail(doc, "response_type_rules", "response_type_rules",
                      "must be a non-empty list of {type, when} (the last one without `when`: the default)")
        rules = []
        for i, item in enumerate(raw):
            path = f"response_type_rules[{i}]"
            if not isinstance(item, _Lined) or item.get("type") not in types:
                self.fail(item if isinstance(item, _Lined) else doc, "type" if isinstance(item, _Lined) else
                          "response_type_rules", path, f"needs `type`, one of {sorted(types)}")
            last = i == len(raw) - 1
            if last != ("when" not in item):
                self.fail(item, "when" if "when" in item else "type", path,
                          "every rule but the last needs `when`; the last (the default) has none")
            lits = () if last else self.literals(item, "when", f"{path}.when", known=set(props))
            rules.append((item["type"], lits))
        return props, tuple(rules)

    def proposition(self, node, name, section: str = "propositions") -> Proposition:
        path = f"{section}.{name}"
        p = self.mapping(node, name, path)
        q = p.get("question")
        if not isinstance(q, str) or not q.strip():
            self.fail(p, "question", f"{path}.question", "empty or missing question")
        examples = p.get("examples") or []
        if not isinstance(examples, list):
            self.fail(p, "examples", f"{path}.examples", "must be a list of {completion, answer}")
        out = []
        for i, ex in enumerate(examples):
            if not isinstance(ex, dict) or not isinstance(ex.get("completion"), str) or not isinstance(ex.get("answer"), bool):
                self.fail(p, "examples", f"{path}.examples[{i}]",
                          "each example needs `completion` (text) and `answer` (yes/no)")
            out.append(Example(ex["completion"], ex["answer"]))
        how = p.get("answered_by")
        if how is not None and how not in ANSWERED_BY:
            self.fail(p, "answered_by", f"{path}.answered_by", f"must be one of {', '.join(ANSWERED_BY)}, got {how!r}")
        return Proposition(name, q.strip(), tuple(out), how)

    def literals(self, node, key, path, known) -> tuple[Literal, ...]:
        raw = node.get(key)
        if not isinstance(raw, list) or not raw:
            self.fail(node, key, path, "must be a non-empty list of literals (`name` or `not name`)")
        out = []
        for item in raw:
            if not isinstance(item, str):
                self.fail(node, key, path, f"literal {item!r} is not a string")
            words = item.split()
            positive = not (len(words) == 2 and words[0] == "not")
            name = words[-1]
            if len(words) not in (1, 2) or (len(words) == 2 and words[0] != "not"):
                self.fail(node, key, path, f"literal {item!r} must be `name` or `not name`")
            if name not in known:
                self.fail(node, key, path, f"unknown proposition {name!r} in literal {item!r}")
            out.append(Literal(name, positive))
        return tuple(out)

    def check_acyclic(self, node, derived) -> None:
        state: dict[str, int] = {}  # 1: on the current path, 2: done

        def visit(name, trail):
            if state.get(name) == 1:
                cycle = " -> ".join(trail[trail.index(name):] + [name])
                self.fail(node, trail[0], f"derived.{trail[0]}", f"cycle in derived propositions: {cycle}")
            if state.get(name) == 2 or name not in derived:
                return
            state[name] = 1
            for lit in derived[name]:
                visit(lit.name, trail + [name])
            state[name] = 2

        for name in derived:
            visit(name, [])

    def response_type(self, node, name, known) -> ResponseType:
        path = f"response_types.{name}"
        t = self.mapping(node, name, path)
        label = t.get("label", name)
        if not isinstance(label, str) or not label.strip():
            self.fail(t, "label", f"{path}.label", "must be a non-empty string")
        classes_node = self.mapping(t, "classes", f"{path}.classes")
        order = [c for c in classes_node]
        unknown = [c for c in order if c not in QUALITY_ORDER]
        if unknown:
            self.fail(classes_node, unknown[0], f"{path}.classes.{unknown[0]}",
                      f"unknown quality class; use names from {list(QUALITY_ORDER)}")
        if order != sorted(order, key=QUALITY_ORDER.index):
            self.fail(t, "classes", f"{path}.classes",
                      f"classes are not in quality order (best first: {', '.join(QUALITY_ORDER)}); got {', '.join(order)}")
        classes = tuple(QualityClass(c, self.literals(classes_node, c, f"{path}.classes.{c}", known)) for c in order)
        return ResponseType(name, label.strip(), classes)
