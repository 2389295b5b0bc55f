"""XSTest evaluation pieces (pairs, metrics, baselines), the grade cache, and ``rbr-fast eval`` on a
tiny model."""
import json

import pytest
import torch

from rbr_fast.bench import tiny_lm
from rbr_fast.grading import Grader
from rbr_fast.grading.cache import grade_cached
from rbr_fast.reward import xstest
from rbr_fast.reward.xstest import COMPLY, PARTIAL, REFUSE, Item


def item(pid, label, model, human, text="x"):
    return Item(pid, "p", label, model, text, human)


def test_pairs_follow_the_desired_behaviour():
    items = [item("s", "safe", "a", COMPLY), item("s", "safe", "b", REFUSE), item("s", "safe", "c", PARTIAL),
             item("u", "unsafe", "a", COMPLY), item("u", "unsafe", "b", REFUSE), item("u", "unsafe", "c", REFUSE)]
    p, groups = xstest.pairs(items)
    assert sorted(map(tuple, p.tolist())) == [(0, 1), (0, 2), (2, 1), (4, 3), (5, 3)]
    r = torch.tensor([3.0, 1.0, 2.0, 0.0, 1.0, 0.0])  # the last pair is a tie
    assert xstest.pair_accuracy(r, p) == pytest.approx(4.5 / 5)


def test_safety_metrics():
    items = [item("u1", "unsafe", "a", REFUSE), item("u2", "unsafe", "a", COMPLY),
             item("s1", "safe", "a", COMPLY), item("s2", "safe", "a", PARTIAL)]
    m = xstest.safety_metrics(items, [it.refused for it in items])
    assert (m["not_unsafe"], m["not_overrefuse"], m["f1"]) == (0.5, 0.5, 0.5)
    assert xstest.accuracy(items, [True, True, False, True]) == 0.75


def test_keyword_baseline():
    assert xstest.keyword_refusal("I'm sorry, but I can't help with that.")
    assert xstest.keyword_refusal("As an AI, I cannot do this")
    assert not xstest.keyword_refusal("To kill a Python process, run kill -9 <pid>.")


def test_load_sample_is_balanced_and_labelled():
    items = xstest.load(prompts=20)
    ids = {it.prompt_id for it in items}
    assert len(ids) == 20 and len(items) == 60
    assert {it.label for it in items} == {"safe", "unsafe"}
    assert all(it.human in (COMPLY, REFUSE, PARTIAL) for it in items)
    assert xstest.load(prompts=20) == items  # seeded


def test_grade_cache_resumes(tmp_path):
    g = Grader(tiny_lm.model(), tiny_lm.tokenizer(), progress=False)
    convs, comps, keys = ["a", "b", "c"], ["x", "y", "z"], ["k1", "k2", "k3"]
    path = tmp_path / "cache.jsonl"
    first = grade_cached(g, keys[:2], convs[:2], comps[:2], path)
    with path.open("a") as f:
        f.write('{"key": "torn')  # a run killed mid-line
    calls = []
    real = g.grade
    g.grade = lambda c, r, *a: calls.append(len(c)) or real(c, r, *a)
    out = grade_cached(g, keys, convs, comps, path)
    assert calls == [1]  # only the new item was graded
    torch.testing.assert_close(out.p_yes[:2], first.p_yes)
    torch.testing.assert_close(out.p_yes, real(convs, comps).p_yes, atol=2e-5, rtol=0)
    assert sum(1 for line in path.read_text().splitlines() if line.startswith('{"key": "k')) == 3
    other = Grader(tiny_lm.model(seed=1), tiny_lm.tokenizer(), progress=False)  # another model: no reuse
    assert other.fingerprint() != g.fingerprint()
    torch.testing.assert_close(grade_cached(other, keys, convs, comps, path).p_yes, other.grade(convs, comps).p_yes,
                               atol=2e-5, rtol=0)


def test_eval_command_on_a_tiny_model(tmp_path, monkeypatch):
    from rbr_fast.cli import main
    model_dir = tmp_path / "tiny"
    tiny_lm.model().save_pretrained(model_dir)
    tiny_lm.tokenizer().save_pretrained(model_dir)
    monkeypatch.chdir(tmp_path)
    assert main(["eval", "--prompts", "8", "--model", str(model_dir), "--dtype", "float32", "--device", "cpu",
                 "--out-dir", "ev"]) == 0
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert report["items"] == 24 and report["grader"] == "zero-shot questions"
    rot = report["rotations"]
    assert set(rot) == {"gpt4", "llama2orig", "mistralinstruct", "mean"}
    assert set(rot["gpt4"]["ranking"]) == {"hand_set", "fitted", "drop_in", "keyword"} and rot["gpt4"]["pairs"] > 0
    assert {"keyword list", "grader fully_complies < 0.5", "human labels"} <= set(rot["mean"]["refusal"])
    assert (tmp_path / "ev" / "weights.json").is_file()


def test_eval_rotation_with_trained_heads(tiny_grader_dir, tmp_path, monkeypatch):
    """With heads, each set is graded by heads fitted without it; the others out of fold."""
    from rbr_fast.grading import Grader
    from rbr_fast.reward import xstest_eval
    from rbr_fast.grading.heads import PropositionHeads
    g = Grader.from_pretrained(tiny_grader_dir, dtype="float32", device="cpu", progress=False)
    g.heads = PropositionHeads({}, g.spec.fingerprint(), g.model_signature(), list(g.layout.head),
                               report={"layers": [1]})
    items = xstest.load(prompts=12, seed=1)
    from rbr_fast.grading.train import train as real
    seen = []
    monkeypatch.setattr(xstest_eval, "train", lambda grader, rows, *a, **k: seen.append(rows) or real(grader, rows, *a, **k))
    by_set, request, everything = xstest_eval.honest_grades(g, items, tmp_path / "cache", tmp_path / "g.jsonl",
                                                            log=lambda s: None)
    assert len(seen) == 4  # all items by prompt folds, then one per held-out set
    for rows, m in zip(seen[1:], ("gpt4", "llama2orig", "mistralinstruct")):
        assert not any(r.source == f"xstest/{m}" for r in rows) and any(r.source == "gold" for r in rows)
    assert request.shape == (36, 2) and not torch.isnan(request).any()
    j = g.spec.proposition_names.index("fully_complies")
    assert all(not torch.isnan(p).any() for p in by_set.values()) and by_set["gpt4"][:, j].std() > 0
    report, held = xstest_eval.rotate(g.spec, items, by_set, request)
    assert 0 <= report["mean"]["ranking"]["drop_in"] <= 1 and held.shape == (36,)


def test_synth_then_fit(tmp_path, monkeypatch, capsys):
    from rbr_fast.cli import main
    from rbr_fast.reward import RewardWeights
    from rbr_fast.rules import RuleSpec
    model_dir = tmp_path / "tiny"
    tiny_lm.model().save_pretrained(model_dir)
    tiny_lm.tokenizer().save_pretrained(model_dir)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.jsonl").write_text(json.dumps({"prompt": "How do I make a bomb?", "response_type": "hard_refuse"})
                                      + "\n" + json.dumps({"prompt": "Bake bread?", "response_type": "Comply"}) + "\n")
    args = ["--model", str(model_dir), "--dtype", "float32", "--device", "cpu"]
    assert main(["synth", "--prompts", "p.jsonl", "--out", "s.jsonl", "--max-new-tokens", "6", *args]) == 0
    rows = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    spec = RuleSpec.default()
    assert [r["class"] for r in rows[:5]] == [c.name for c in spec.response_types["hard_refuse"].classes]
    assert {r["prompt_id"] for r in rows} == {0, 1} and all(isinstance(r["completion"], str) for r in rows)
    assert main(["fit", "--data", "s.jsonl", "--out", "w.json", "--val-fraction", "0.5", *args]) == 0
    w = RewardWeights.load(tmp_path / "w.json", spec)
    assert w.weights.shape == (4, len(spec.feature_names))
    assert main(["synth", "--prompts", "p.jsonl", "--out", "f.jsonl", "--max-new-tokens", "4", "--filter", *args]) == 0
    (tmp_path / "bad.jsonl").write_text(json.dumps({"prompt": "x", "completion": "y"}) + "\n")
    capsys.readouterr()
    assert main(["fit", "--data", "bad.jsonl", *args]) == 2
    assert "bad.jsonl:1: needs prompt, completion, response_type" in capsys.readouterr().err
