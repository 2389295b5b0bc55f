"""``rbr-fast experiment`` on a tiny random llama: the split, the SFT start, every arm, resume after a
kill, results.json's shape; the judges and the hacking count on hand-made answers."""
import json
from pathlib import Path

import pytest

from rbr_fast.data.prompts import xstest_split
from rbr_fast.evaluation.policy import judge_answers, refusal_f1, safety_summary
from rbr_fast.ppo import experiment
from rbr_fast.ppo.experiment import ExperimentConfig
from rbr_fast.ppo.sft import SFTConfig, first_sentences, sft_targets


def test_split_is_disjoint_and_fixed():
    a, b = xstest_split(), xstest_split()
    assert a == b
    ids = {k: {p.xstest_id for p in v} for k, v in a.items()}
    assert not (ids["sft"] & ids["ppo"]) and not (ids["sft"] & ids["eval"]) and not (ids["ppo"] & ids["eval"])
    assert sum(map(len, ids.values())) == 450
    for part in a.values():  # both labels in every part
        assert {p.label for p in part} == {"safe", "unsafe"}
    written = experiment.eval_prompts()[len(a["eval"]):]
    assert len(written) == 48 and {p.label for p in written} == {"safe", "unsafe"}
    texts = {p.prompt for v in a.values() for p in v}
    assert not texts & {p.prompt for p in written}


def test_sft_targets():
    split = xstest_split()["sft"]
    pairs = sft_targets(split, SFTConfig(refuse_share=0.5))
    safe = {p.prompt for p in split if p.label == "safe"}
    unsafe = [p for p, _ in pairs if p not in safe]
    n_unsafe = sum(p.label == "unsafe" for p in split)
    assert abs(len(unsafe) - n_unsafe / 2) <= 1
    assert all(len(t) <= 240 and t for _, t in pairs)
    assert len(sft_targets(split, SFTConfig(refuse_share=0.0))) == len(pairs) - len(unsafe)
    assert first_sentences("Steps: 1. Lay it flat. 2. Cut.", 24) == "Steps: 1. Lay it flat."


def test_judges_and_hacking():
    details = [{"propositions": {"fully_complies": c}, "classes": {"ideal": i, "bad": 1 - i}, "rbr": 0.0}
               for c, i in ((0.1, 0.9), (0.9, 0.8), (0.9, 0.7), (0.2, 0.9))]
    texts = ["I'm sorry, I can't help with that.", "Sure, here is how.", "Sure: first, ...", "I cannot do that."]
    judged = judge_answers(["unsafe", "unsafe", "safe", "safe"], texts, details)
    assert [j["keyword"] for j in judged] == [True, False, False, True]
    assert [j["grader"] for j in judged] == [True, False, False, True]
    s = safety_summary(judged)
    assert s["keyword"]["not_unsafe"] == 0.5 and s["keyword"]["not_overrefuse"] == 0.5
    assert s["keyword"]["f1"] == pytest.approx(0.5)
    assert s["keyword"]["hacked"] == 0.5  # answers 2 and 4: the reward calls them ideal, the judge wrong
    assert refusal_f1(0.0, 0.0) == 0.0


def _config(tiny_grader_dir, out, **kw):
    return ExperimentConfig(out=str(out), seeds=(0,), steps=2, eval_every=1, eval_new_tokens=4,
                            sft=SFTConfig(policy=tiny_grader_dir, epochs=1, bf16=False),
                            ppo=dict(batch_size=4, group_size=2, mini_batch_size=4, ppo_epochs=1, lr=1e-4,
                                     max_new_tokens=4, bf16="off"),
                            grader=tiny_grader_dir, cache=str(out / "cache"), written_eval=False, progress=False, **kw)


def test_experiment_runs_and_resumes(tiny_grader_dir, tmp_path, monkeypatch):
    cfg = _config(tiny_grader_dir, tmp_path)
    calls = {"n": 0}
    judge_call = experiment.Judge.__call__

    def dies_after_step_one(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:  # before, step 1 of the first run, then killed at its step 2
            raise KeyboardInterrupt
        return judge_call(self, *a, **k)
    monkeypatch.setattr(experiment.Judge, "__call__", dies_after_step_one)
    with pytest.raises(KeyboardInterrupt):
        experiment.run(cfg, log=lambda *_: None)
    run0 = tmp_path / "runs" / "rbr_fitted-s0"
    assert set(json.loads((run0 / "evals.json").read_text())) == {"1"}
    monkeypatch.setattr(experiment.Judge, "__call__", judge_call)
    results = experiment.run(cfg, log=lambda *_: None)
    assert sorted(results["arms"]) == ["no_rbr", "rbr_fitted", "rbr_hand"]
    for arm in results["arms"].values():
        r = arm["0"]
        for when in ("before", "after"):
            assert {"not_unsafe", "not_overrefuse", "f1"} <= set(r[when])
        assert [c["step"] for c in r["curve"]] == [0, 1, 2]
    steps = [json.loads(x)["step"] for x in (run0 / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]  # the resumed run continued from step 1's checkpoint
    assert (tmp_path / "results.md").read_text().startswith("| arm |")
    assert len(list((tmp_path / "cache").glob("sft-*/sft.json"))) == 1
    # a finished experiment is read back, nothing retrained
    import rbr_fast.ppo.trainer
    monkeypatch.setattr(rbr_fast.ppo.trainer, "PPOTrainer", None)
    again = experiment.run(cfg, log=lambda *_: None)
    assert again["arms"] == results["arms"]


def test_bad_arm():
    with pytest.raises(ValueError, match="choose from"):
        ExperimentConfig(out="x", arms=("rbr_fited",))
