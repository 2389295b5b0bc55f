"""RuleBasedReward on a tiny grader, weights files, and weight fitting."""
import pytest
import torch

from rbr_fast import RuleBasedReward, RuleSpec, ops
from rbr_fast.bench import tiny_lm
from rbr_fast.grading import Grader
from rbr_fast.reward import RewardWeights, fit_weights, ranked_pairs, split_by_group
from rbr_fast.rules import DEFAULT_SPEC


@pytest.fixture(scope="module")
def reward():
    return RuleBasedReward(Grader(tiny_lm.model(), tiny_lm.tokenizer(), progress=False), weights="hand")


def test_fitted_weights_follow_the_spec_structure_not_its_wording(reward):
    """Rewording a question keeps the fitted weights; a spec with other classes gets hand-set weights
    (with one warning) by default and refuses the fitted ones by name."""
    from rbr_fast.errors import UserError
    from rbr_fast.reward import default_weights, resolve_weights
    spec = RuleSpec.default()
    assert default_weights(spec) == "xstest"
    assert torch.equal(RuleBasedReward(reward.grader).weights.weights, RewardWeights.named("xstest", spec).weights)
    text = open(DEFAULT_SPEC, encoding="utf-8").read()
    q = spec.propositions["apology"].question
    reworded = RuleSpec.from_yaml(text.replace(q, q + " (reworded)"))
    assert reworded.fingerprint() != spec.fingerprint() and reworded.structure() == spec.structure()
    assert default_weights(reworded) == "xstest"
    assert torch.equal(resolve_weights(None, reworded).weights, RewardWeights.named("xstest", spec).weights)
    other = RuleSpec.from_yaml(text.replace("ideal: [fully_complies, not inability_to_comply,",
                                            "ideal: [fully_complies, apology, not inability_to_comply,"))
    assert other.structure() != spec.structure() and default_weights(other) == "hand"
    with pytest.warns(UserWarning, match="no fitted reward weights"):
        w = resolve_weights(None, other)
    assert torch.equal(w.weights, RewardWeights.hand_set(other).weights)
    with pytest.raises(UserError, match="other propositions or classes"):
        resolve_weights("xstest", other)


PROMPTS = ["How do I make a bomb?", "How do I kill a Python process?", "I feel hopeless."]
REPLIES = ["I'm sorry, but I can't help with that.", "Run `kill <pid>`.", "I'm so sorry you feel this way."]
TYPES = ["Hard Refuse", "comply", "safe_refuse_2"]


def test_score_equals_reward_of_grader_features(reward):
    spec = reward.spec
    got = reward.score(PROMPTS, REPLIES, TYPES, rm_scores=[0.5, -1.0, 2.0])
    p = reward.grader.grade(PROMPTS, REPLIES).p_yes
    rt = torch.tensor([spec.type_index(t) for t in TYPES])
    want = ops.rbr_reward_from_props(p, spec.conjunctions(), reward.weights.weights, rt).reward
    assert got == pytest.approx((want.double() + torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)).tolist(), abs=1e-6)
    assert reward.score(PROMPTS, REPLIES, [0, 3, 2]) == pytest.approx(want.tolist(), abs=1e-6)


def test_details(reward):
    d = reward.details(PROMPTS, REPLIES, TYPES)
    assert [x["response_type"] for x in d] == ["hard_refuse", "comply", "safe_refuse_2"]
    assert set(d[0]["propositions"]) == set(reward.spec.propositions)
    assert set(d[0]["classes"]) == {c.name for c in reward.spec.response_types["hard_refuse"].classes}
    assert "refuses" in d[0]["derived"] and d[0]["rm_score"] is None
    hand = RewardWeights.hand_set(reward.spec)
    k = reward.spec.type_index("comply")
    cols = {n: i for i, n in enumerate(reward.spec.feature_names)}
    want = sum(float(hand.weights[k, cols[f"comply/{c}"]]) * p for c, p in d[1]["classes"].items())
    assert d[1]["rbr"] == pytest.approx(want, abs=1e-5)


def test_inferred_response_types(reward):
    d = reward.details(PROMPTS, REPLIES)
    q = reward.grader.grade_prompts(PROMPTS)
    types = reward.spec.infer_types(q.p_yes)
    assert [x["response_type"] for x in d] == types
    assert all(x["response_type_source"] == "inferred" for x in d)
    assert d[0]["prompt_propositions"] == pytest.approx(dict(zip(q.propositions, q.p_yes[0].tolist())))
    assert [x["response_type_confidence"] for x in d] == pytest.approx(reward.spec.type_confidence(q.p_yes))
    assert reward.score(PROMPTS, REPLIES) == pytest.approx(reward.score(PROMPTS, REPLIES, types), abs=1e-6)


def test_details_say_how_each_proposition_was_answered_and_metrics_keep_their_names(reward):
    """The tiny grader has no heads: every proposition is asked. Metric names are the same for a
    batch of given types and one of inferred types."""
    from rbr_fast.rules import LOW_CONFIDENCE
    from rbr_fast.reward import reward_metrics
    given, inferred = reward.details(PROMPTS, REPLIES, TYPES), reward.details(PROMPTS, REPLIES)
    assert given[0]["answered_by"] == dict.fromkeys(reward.spec.propositions, "question")
    assert [x["response_type_confidence"] for x in given] == [1.0] * 3
    a, b = reward_metrics(given), reward_metrics(inferred)
    assert set(a) == set(b) and a["rbr/zero_shot_share"] == 1.0 and a["rbr/type_inferred_share"] == 0.0
    assert b["rbr/type_inferred_share"] == 1.0
    assert b["rbr/type_unsure_share"] == pytest.approx(
        sum(x["response_type_confidence"] < LOW_CONFIDENCE for x in inferred) / 3)


def test_given_types_are_kept_in_any_batch_and_only_missing_ones_inferred(reward):
    """A labelled item's reward does not depend on what shares its batch: random mixes of given and
    missing types, scored together, equal the items scored one at a time."""
    import random
    rng = random.Random(0)
    pool = [(p, r) for p in PROMPTS for r in REPLIES]
    for _ in range(3):
        rows = rng.sample(pool, 6) + [pool[0]]  # a repeated prompt too
        types = [rng.choice([None, None, "comply", "Hard Refuse", "safe_refuse_1"]) for _ in rows]
        together = reward.details([p for p, _ in rows], [r for _, r in rows], types)
        alone = [reward.details([p], [r], [t])[0] for (p, r), t in zip(rows, types)]
        assert [d["response_type"] for d in together] == [d["response_type"] for d in alone]
        assert [d["response_type_source"] for d in together] == ["inferred" if t is None else "given" for t in types]
        assert [d["reward"] for d in together] == pytest.approx([d["reward"] for d in alone], abs=1e-5)
        for t, d in zip(types, together):
            if t is not None:
                assert d["response_type"] == reward.spec.response_type(t).name and "prompt_propositions" not in d


def test_grade_prompts_matches_per_prompt(reward):
    g = reward.grader
    q = g.grade_prompts(PROMPTS, ["asks_for_harmful_help"])
    tail = g._request.tail("asks_for_harmful_help")
    prefix = g._prefix(g._request, PROMPTS[0], None, 0).ids
    with torch.no_grad():
        lp = torch.log_softmax(g.model(torch.tensor([prefix + tail])).logits[0, -1].double(), -1)
    y, n = torch.logsumexp(lp[g.yes_ids], 0), torch.logsumexp(lp[g.no_ids], 0)
    assert q.p_yes[0, 0].item() == pytest.approx(float(torch.sigmoid(y - n)), abs=2e-5)
    with pytest.raises(KeyError, match="unknown prompt proposition"):
        g.grade_prompts(PROMPTS, ["apology"])


def test_bad_calls(reward):
    no_rules = RuleSpec.from_yaml(DEFAULT_SPEC.read_text().split("# Questions about the user's request")[0]
                                  + "response_types:" + DEFAULT_SPEC.read_text().split("\nresponse_types:")[1])
    plain = RuleBasedReward(Grader(reward.grader.model, reward.grader.tokenizer, no_rules, progress=False))
    with pytest.raises(ValueError, match="response_types is required"):
        plain.score(PROMPTS, REPLIES)
    with pytest.raises(ValueError, match="unknown response type 'nope'"):
        reward.score(PROMPTS, REPLIES, ["nope", "comply", "comply"])
    with pytest.raises(ValueError, match="sequence of 3"):
        reward.score(PROMPTS, REPLIES, ["comply"])
    with pytest.raises(ValueError, match="rm_scores must be 3 finite"):
        reward.score(PROMPTS, REPLIES, TYPES, rm_scores=[1.0, float("nan"), 0.0])
    assert reward.score([], [], []) == []


def test_weights_roundtrip_and_spec_check(tmp_path, reward):
    w = RewardWeights.hand_set(reward.spec)
    w.weights[1, 3] = 0.123456789
    path = tmp_path / "w.json"
    w.save(path)
    back = RewardWeights.load(path, reward.spec)
    assert torch.equal(back.weights, w.weights) and back.feature_names == reward.spec.feature_names
    reworded = RuleSpec.from_yaml(DEFAULT_SPEC.read_text().replace("Does the reply contain an apology",
                                                                   "Does the reply apologise"))
    assert torch.equal(RewardWeights.load(path, reworded).weights, w.weights)  # the wording does not matter
    other = RuleSpec.from_yaml(DEFAULT_SPEC.read_text().replace("clean_tone: [not judgement, ",
                                                                "clean_tone: [not apology, not judgement, "))
    with pytest.raises(ValueError, match="other propositions or classes"):
        RewardWeights.load(path, other)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not a readable rbr_fast weights file"):
        RewardWeights.load(path, reward.spec)
    assert [p.name for p in tmp_path.iterdir()] == ["w.json"]  # no temporary files left behind


def test_ranked_pairs_and_split():
    pairs, margins = ranked_pairs(["a", "a", "a", "b", "b"], [0, 2, 1, 1, 1], margin=0.5, per_rank=0.25)
    assert sorted(map(tuple, pairs.tolist())) == [(0, 1), (0, 2), (2, 1)]
    m = dict(zip(map(tuple, pairs.tolist()), margins.tolist()))
    assert m[(0, 1)] == pytest.approx(0.75) and m[(0, 2)] == pytest.approx(0.5)
    groups = [i // 3 for i in range(300)]
    train, val = split_by_group(groups, 0.2, seed=1)
    assert not ({g for g, t in zip(groups, train) if t} & {g for g, v in zip(groups, val) if v})
    assert 50 <= int(val.sum()) <= 70


def test_fit_recovers_a_planted_ranking():
    g = torch.Generator().manual_seed(0)
    N, F, K = 3000, 12, 3
    x = torch.rand(N, F, generator=g)
    rt = torch.randint(0, K, (N,), generator=g)
    true_w = torch.randn(K, F, generator=g)
    groups = [i // 4 for i in range(N)]
    rt = rt.view(-1, 4)[:, :1].expand(-1, 4).reshape(-1)  # one response type per prompt
    score = (x * true_w[rt]).sum(1)
    ranks = [0] * N
    for s in range(0, N, 4):
        order = torch.argsort(score[s:s + 4], descending=True).tolist()
        for r, i in enumerate(order):
            ranks[s + i] = r
    pairs, margins = ranked_pairs(groups, ranks, margin=0.1)
    res = fit_weights(x, rt, pairs, margins, groups=groups, val_fraction=0.25, steps=500, lr=0.05)
    assert res.train["pair_accuracy"] > 0.9 and res.val["pair_accuracy"] > 0.88
    assert res.val["pairs"] > 0 and res.train["pairs"] + res.val["pairs"] == pairs.shape[0]
    assert res.history[-1][1] < res.history[0][1]
    with_rm = fit_weights(x, rt, pairs, margins, rm_scores=score.double() * 100, steps=5)
    assert with_rm.train["pair_accuracy"] == 1.0  # the RM alone already ranks every pair


def test_fit_bad_inputs():
    x = torch.rand(4, 2)
    rt = torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="pair indices"):
        fit_weights(x, rt, torch.tensor([[0, 9]]))
    with pytest.raises(ValueError, match="NaN"):
        fit_weights(x + float("nan"), rt, torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match="margins must have shape"):
        fit_weights(x, rt, torch.tensor([[0, 1]]), margins=torch.ones(2))
    with pytest.raises(ValueError, match="no completions"):
        fit_weights(x[:0], rt[:0], torch.zeros(0, 2))


def test_adaptive_selection_and_preference():
    from rbr_fast.reward import adaptive
    spec = RuleSpec.default()
    d = adaptive.directions(spec, "hard_refuse")
    names = spec.proposition_names
    assert d[names.index("apology")] == 1 and d[names.index("judgement")] == -1
    assert d[names.index("disallowed_content")] == -1 and d[names.index("provides_resources")] == 0
    P = len(names)
    a, b = torch.full((1, P), 0.5), torch.full((1, P), 0.5)
    a[0, names.index("apology")], b[0, names.index("apology")] = 0.9, 0.1  # A apologises
    b[0, names.index("disallowed_content")] = 0.95  # B gives disallowed content
    a[0, names.index("provides_resources")] = 1.0  # irrelevant for hard refusals: never selected
    sel = adaptive.select(a, b, d, k=2)
    assert {names[i] for i in torch.nonzero(sel[0]).flatten().tolist()} == {"apology", "disallowed_content"}
    assert adaptive.prefer_a(a, b, d, sel).item() == 1.0
    assert adaptive.select(a, b, d, 2, "all").sum() == (d != 0).sum()
    r = adaptive.select(a, b, d, 2, "random", generator=torch.Generator().manual_seed(0))
    assert int(r.sum()) == 2 and bool((d[r[0]] != 0).all())
    g = torch.stack([a[0], b[0]])
    s = adaptive.group_scores(g, d, k=2)
    assert s[0] > s[1]
    with pytest.raises(ValueError, match="mode"):
        adaptive.select(a, b, d, 2, "best")
    with pytest.raises(ValueError, match="relevant rules"):
        adaptive.group_scores(g, torch.zeros(P), k=2)


def test_score_groups(reward):
    from rbr_fast.reward import adaptive
    prompts = ["How do I make a bomb?"] * 3 + ["Bake bread?"] * 2
    replies = ["I'm sorry, I can't.", "Sure, here is how.", "No.", "Flour and water.", "I can't."]
    types = ["hard_refuse"] * 3 + ["comply"] * 2
    got = reward.score_groups(prompts, replies, [0, 0, 0, 1, 1], types, k=2)
    p = reward.grader.grade(prompts, replies).p_yes
    want = adaptive.group_scores(p[:3], adaptive.directions(reward.spec, "hard_refuse"), 2).tolist()
    assert got[:3] == pytest.approx(want, abs=1e-6)
    with pytest.raises(ValueError, match="mixes response types"):
        reward.score_groups(prompts, replies, [0] * 5, types)


def test_fit_anchor_holds_the_weights_near_init():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(40, 5, generator=g)
    rt = torch.zeros(40, dtype=torch.int64)
    pairs = torch.tensor([[i, i + 1] for i in range(0, 40, 2)])
    init = torch.randn(1, 5, generator=g)
    free = fit_weights(x, rt, pairs, init=init, weight_decay=0.0).weights
    held = fit_weights(x, rt, pairs, init=init, anchor=10.0, weight_decay=0.0).weights
    assert (held - init).norm() < 0.1 * (free - init).norm()
    with pytest.raises(ValueError, match="anchor"):
        fit_weights(x, rt, pairs, anchor=-1.0)
