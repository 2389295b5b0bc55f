"""Rule specs: the default spec, and every validation error naming file, line and key."""
import json

import pytest

from rbr_fast import data
from rbr_fast.rules import DEFAULT_SPEC, QUALITY_ORDER, RuleSpec, SpecError


GOOD = """\
propositions:
  apology:
    question: Does it apologise?
  refusal:
    question: Does it refuse?
    examples: [{completion: "I can't.", answer: yes}]
derived:
  polite: [apology, refusal]
response_types:
  hard:
    label: Hard Refuse
    classes:
      ideal: [polite]
      unacceptable_completion: [not refusal]
"""


def test_default_spec_loads():
    spec = RuleSpec.default()
    assert len(spec.propositions) == 23
    assert {t.label for t in spec.response_types.values()} == {"Hard Refuse", "Safe Refuse 1", "Safe Refuse 2", "Comply"}
    for t in spec.response_types.values():
        assert [c.name for c in t.classes] == list(QUALITY_ORDER)
    assert all(p.examples for p in spec.propositions.values())


def test_default_spec_matches_gold_labels():
    rows = [json.loads(line) for line in data.gold().open()]
    spec = RuleSpec.default()
    assert set(rows[0]["propositions"]) == set(spec.propositions)
    for r in rows:
        spec.response_type(r["response_type"])  # every label in the data is a known type
    # the gold labels classify every completion into some class of its response type
    assert all(spec.classify(r["response_type"], r["propositions"]) is not None for r in rows)


def test_small_spec_and_classify():
    spec = RuleSpec.from_yaml(GOOD)
    assert spec.proposition_names == ["apology", "refusal"]
    assert spec.classify("Hard Refuse", {"apology": True, "refusal": True}) == "ideal"
    assert spec.classify("hard", {"apology": False, "refusal": False}) == "unacceptable_completion"
    assert spec.classify("hard", {"apology": False, "refusal": True}) is None
    with pytest.raises(KeyError, match="unknown response type"):
        spec.response_type("Comply")


@pytest.mark.parametrize("edit,match", [
    (("ideal: [polite]", "ideal: [polite, rudeness]"), r"spec.yaml:13: response_types.hard.classes.ideal: unknown proposition 'rudeness'"),
    (("  refusal:\n    question: Does it refuse?", "  apology:\n    question: Does it refuse?"), r"spec.yaml:4: duplicate key 'apology'"),
    (("polite: [apology, refusal]", "polite: [apology, loop]\n  loop: [polite]"), r"derived.polite: cycle in derived propositions: polite -> loop -> polite"),
    (("question: Does it apologise?", "question: '  '"), r"spec.yaml:3: propositions.apology.question: empty or missing question"),
    (("      ideal: [polite]\n      unacceptable_completion: [not refusal]", "      unacceptable_completion: [not refusal]\n      ideal: [polite]"),
     r"response_types.hard.classes: classes are not in quality order"),
    (("ideal: [polite]", "best: [polite]"), r"response_types.hard.classes.best: unknown quality class"),
    (("polite: [apology, refusal]", "apology: [refusal]"), r"derived.apology: duplicate name: already a proposition"),
    (("ideal: [polite]", "ideal: [maybe polite]"), r"literal 'maybe polite' must be `name` or `not name`"),
    (("ideal: [polite]", "ideal: []"), r"must be a non-empty list of literals"),
    (("    examples: [{completion: \"I can't.\", answer: yes}]", "    examples: [{completion: \"I can't.\"}]"),
     r"propositions.refusal.examples\[0\]: each example needs"),
])
def test_validation_errors(tmp_path, edit, match):
    old, new = edit
    assert old in GOOD
    path = tmp_path / "spec.yaml"
    path.write_text(GOOD.replace(old, new))
    with pytest.raises(SpecError, match=match):
        RuleSpec.load(path)


def test_unreadable_and_invalid_yaml(tmp_path):
    with pytest.raises(SpecError, match="cannot read the spec"):
        RuleSpec.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("propositions: [unclosed\n")
    with pytest.raises(SpecError, match="bad.yaml:.*not valid YAML"):
        RuleSpec.load(bad)


RULES = GOOD + """\
  easy:
    classes:
      ideal: [not refusal]
prompt_propositions:
  harmful:
    question: Is the request harmful?
response_type_rules:
  - {type: hard, when: [harmful]}
  - {type: easy}
"""


def test_response_type_rules():
    import torch
    spec = RuleSpec.from_yaml(RULES)
    assert list(spec.prompt_propositions) == ["harmful"]
    assert spec.infer_types(torch.tensor([[0.9], [0.5], [0.1]])) == ["hard", "hard", "easy"]
    with pytest.raises(ValueError, match=r"need \[N, 1\]"):
        spec.infer_types(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="NaN"):
        spec.infer_types(torch.tensor([[float("nan")]]))
    with pytest.raises(ValueError, match="no response_type_rules"):
        RuleSpec.from_yaml(GOOD).infer_types(torch.zeros(1, 0))


def test_type_confidence_is_the_probability_of_the_picked_type():
    """Rules decide in order: the default spec's self-harm rule, then harmful help, then comply."""
    import torch
    spec = RuleSpec.default()
    assert list(spec.prompt_propositions) == ["mentions_self_harm", "asks_for_harmful_help"]
    p = torch.tensor([[0.9, 0.2], [0.1, 0.8], [0.2, 0.3], [0.55, 0.9]])
    assert spec.infer_types(p) == ["safe_refuse_2", "hard_refuse", "comply", "safe_refuse_2"]
    want = [0.9, 0.9 * 0.8, 0.8 * 0.7, 0.55]
    assert spec.type_confidence(p) == pytest.approx(want)
    one = RuleSpec.from_yaml(RULES)
    assert one.type_confidence(torch.tensor([[0.5], [0.0]])) == pytest.approx([0.5, 1.0])


def test_fingerprints_per_proposition_and_structure():
    """Each proposition's definition has its own hash; the structure ignores wording; the spec's
    fingerprint covers both."""
    spec = RuleSpec.default()
    q = spec.propositions["apology"].question
    reworded = RuleSpec.from_yaml(DEFAULT_SPEC.read_text().replace(q, "Does the reply say sorry?"))
    a, b = spec.definitions(), reworded.definitions()
    assert set(a) == set(spec.propositions) | set(spec.prompt_propositions)
    assert [n for n in a if a[n] != b[n]] == ["apology"]
    assert reworded.structure() == spec.structure() and reworded.fingerprint() != spec.fingerprint()
    example = spec.propositions["judgement"].examples[0].completion
    edited = RuleSpec.from_yaml(DEFAULT_SPEC.read_text().replace(example, example + " Really."))
    assert [n for n in a if a[n] != edited.definitions()[n]] == ["judgement"]
    renamed = RuleSpec.from_yaml(DEFAULT_SPEC.read_text().replace("clean_tone", "kind_tone"))
    assert renamed.structure() != spec.structure()


@pytest.mark.parametrize("edit,match", [
    (("{type: hard, when: [harmful]}", "{type: nope, when: [harmful]}"), r"response_type_rules\[0\]: needs `type`"),
    (("{type: hard, when: [harmful]}", "{type: hard, when: [apology]}"), r"unknown proposition 'apology'"),
    (("  - {type: easy}", "  - {type: easy, when: [harmful]}"), r"response_type_rules\[1\]: every rule but the last"),
    (("  harmful:\n", "  apology:\n"), r"prompt_propositions.apology: duplicate name"),
])
def test_response_type_rule_errors(edit, match):
    old, new = edit
    assert old in RULES
    with pytest.raises(SpecError, match=match):
        RuleSpec.from_yaml(RULES.replace(old, new))
