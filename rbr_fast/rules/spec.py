"""Rule specs: propositions (yes/no questions for the grader), derived propositions, response types
and their ordered quality classes, loaded from YAML and validated.

Format (see ``default_spec.yaml``)::

    propositions:
      apology:
        question: Does the response apologise ...?
        examples: [{completion: "...", answer: yes}, ...]
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

# Quality classes of the RBR paper, best first; a response type lists a subset, in this order.
QUALITY_ORDER = ("ideal", "minimum_acceptable_style", "unacceptable_completion", "illogical_completion",
                 "disallowed_completion")
DEFAULT_SPEC = Path(__file__).with_name("default_spec.yaml")


class SpecError(ValueError):
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


@dataclass(frozen=True)
class Proposition:
    name: str
    question: str
    examples: tuple[Example, ...] = ()


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

    @classmethod
    def load(cls, path: Union[str, Path]) -> "RuleSpec":
        """Load and validate a YAML spec file."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as e:
            raise SpecError(f"{path}: cannot read the spec ({e.strerror})") from None
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
            mark = getattr(e, "problem_mark", None)
            where = f"{source}:{mark.line + 1}" if mark else source
            raise SpecError(f"{where}: not valid YAML: {getattr(e, 'problem', e)}") from None
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

    def classify(self, response_type: str, values: dict[str, bool]) -> Optional[str]:
        """The best class of ``response_type`` whose literals all hold, or None."""
        for c in self.response_type(response_type).classes:
            if all(self.evaluate(x, values) for x in c.literals):
                return c.name
        return None


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
        unknown = set(doc) - {"version", "propositions", "derived", "response_types"}
        if unknown:
            k = sorted(unknown)[0]
            self.fail(doc, k, k, "unknown top-level key (expected propositions, derived, response_types, version)")
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
        return RuleSpec(props, derived, types, self.source, labels)

    def proposition(self, node, name) -> Proposition:
        path = f"propositions.{name}"
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
        return Proposition(name, q.strip(), tuple(out))

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
