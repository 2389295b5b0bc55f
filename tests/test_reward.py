"""RuleBasedReward on a tiny grader, weights files, and weight fitting."""
import math

import pytest
import torch

from rbr_fast import RuleBasedReward, RuleSpec
from rbr_fast.bench import tiny_lm
from rbr_fast.grading import Grader
from rbr_fast.grading.prompts import PROMPT_INSTRUCTIONS, PromptLayout
from rbr_fast.reward import RewardWeights, fit_weights, ranked_pairs, split_by_group
from rbr_fast.rules import DEFAULT_SPEC, Literal


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


# A tiny spec whose rewards are worked out by hand below, from grades the grader is made to return.
TINY_SPEC = """propositions:
  a:
    question: Does the reply apologise?
  b:
    question: Does the reply judge the user?
  c:
    question: Does the reply give harmful content?
  d:
    question: Does the reply mention Python?
derived:
  polite: [a, not b]
response_types:
  refuse:
    classes:
      ideal: [polite, not c]
      unacceptable_completion: [not a]
      disallowed_completion: [c]
  comply:
    classes:
      ideal: [not a, d]
      unacceptable_completion: [a]
"""


def _tiny_reward(reward, monkeypatch, p_yes, weights="hand"):
    """The reward of ``TINY_SPEC`` on a grader that answers ``p_yes`` (rows in call order)."""
    from rbr_fast.grading import Grades
    g = Grader(reward.grader.model, reward.grader.tokenizer, RuleSpec.from_yaml(TINY_SPEC), progress=False)
    p = torch.tensor(p_yes)
    monkeypatch.setattr(g, "grade", lambda convs, comps, *a, **k: Grades(p[:len(comps)], torch.ones_like(p[:len(comps)]),
                                                                          g.spec.proposition_names))
    if weights != "hand":
        names, types = g.spec.feature_names, g.spec.response_type_names
        w = torch.zeros(len(types), len(names))
        for (t, f), v in weights[0].items():
            w[types.index(t), names.index(f)] = v
        weights = RewardWeights(g.spec.fingerprint(), names, types, w, torch.tensor(weights[1]), g.spec.structure())
    return RuleBasedReward(g, weights=weights)


def test_score_of_a_tiny_spec_by_hand(reward, monkeypatch):
    """A class's probability is the product of its literals' (p, or 1 - p when negated; a derived
    name stands for its own product), and the reward weighs the features of the item's type."""
    #           a     b    c    d
    p_yes = [[0.9, 0.2, 0.1, 0.5],   # a refusal: polite 0.9 * 0.8 = 0.72, ideal 0.72 * 0.9 = 0.648
             [0.25, 0.5, 0.0, 0.8]]  # a compliance: ideal 0.75 * 0.8 = 0.6, unacceptable 0.25
    tiny = _tiny_reward(reward, monkeypatch, p_yes)
    assert tiny.spec.feature_names == ["a", "b", "c", "d", "polite", "refuse/ideal", "refuse/unacceptable_completion",
                                       "refuse/disallowed_completion", "comply/ideal", "comply/unacceptable_completion"]
    d = tiny.details(["p1", "p2"], ["r1", "r2"], ["refuse", "comply"])
    assert d[0]["derived"] == pytest.approx({"polite": 0.72})
    assert d[0]["classes"] == pytest.approx({"ideal": 0.648, "unacceptable_completion": 0.1, "disallowed_completion": 0.1})
    assert d[1]["classes"] == pytest.approx({"ideal": 0.6, "unacceptable_completion": 0.25})
    # hand-set: ideal 1, unacceptable -0.5, disallowed -1
    assert [x["rbr"] for x in d] == pytest.approx([0.648 - 0.05 - 0.1, 0.6 - 0.125], abs=1e-6)
    assert tiny.score(["p1", "p2"], ["r1", "r2"], ["refuse", 1], rm_scores=[0.5, -1.0]) == pytest.approx(
        [0.498 + 0.5, 0.475 - 1.0], abs=1e-6)
    # weights on a proposition and a derived column, and a bias per type
    tiny = _tiny_reward(reward, monkeypatch, p_yes, ({("refuse", "polite"): 2.0, ("refuse", "c"): -3.0,
                                                      ("comply", "d"): 0.25, ("comply", "comply/ideal"): 1.0},
                                                     [0.5, -0.1]))
    assert tiny.score(["p1", "p2"], ["r1", "r2"], ["refuse", "comply"]) == pytest.approx(
        [2.0 * 0.72 - 3.0 * 0.1 + 0.5, 0.25 * 0.8 + 0.6 - 0.1], abs=1e-6)
    assert tiny.score(["p1", "p2"], ["r1", "r2"], ["comply", "refuse"]) == pytest.approx(  # the type picks the row
        [0.25 * 0.5 + 0.1 * 0.5 - 0.1, 2.0 * 0.25 * 0.5 - 3.0 * 0.0 + 0.5], abs=1e-6)


def _oracle_rewards(spec, p_yes, weights, bias, types) -> list:
    """Float64 from the spec's definitions, feature by feature (``feature_names`` order): a
    proposition's P(yes), a derived name's or a class's product of its literals' probabilities."""
    names = spec.proposition_names

    def prob(lit, row):
        v = (math.prod(prob(x, row) for x in spec.derived[lit.name]) if lit.name in spec.derived
             else row[names.index(lit.name)])
        return v if lit.positive else 1.0 - v

    def feature(name, row):
        if "/" in name:
            t, c = name.split("/")
            lits = next(k.literals for k in spec.response_types[t].classes if k.name == c)
            return math.prod(prob(x, row) for x in lits)
        return prob(Literal(name), row)

    out = []
    for row, t in zip(p_yes.double().tolist(), types):
        k = spec.type_index(t)
        out.append(float(bias[k]) + sum(float(weights[k, j]) * feature(n, row) for j, n in enumerate(spec.feature_names)))
    return out


def test_score_matches_a_float64_oracle_on_the_default_spec(reward):
    """The tiny grader's answers through the default spec, with random weights on every feature
    column (propositions, derived, classes) and a bias, against ``_oracle_rewards``."""
    spec = reward.spec
    g = torch.Generator().manual_seed(0)
    w = torch.randn(len(spec.response_types), len(spec.feature_names), generator=g)
    b = torch.randn(len(spec.response_types), generator=g)
    rand = RuleBasedReward(reward.grader, weights=RewardWeights(spec.fingerprint(), spec.feature_names,
                                                               spec.response_type_names, w, b, spec.structure()))
    p = reward.grader.grade(PROMPTS, REPLIES).p_yes
    want = _oracle_rewards(spec, p, w, b, TYPES)
    assert rand.score(PROMPTS, REPLIES, TYPES, rm_scores=[0.5, -1.0, 2.0]) == pytest.approx(
        [x + r for x, r in zip(want, [0.5, -1.0, 2.0])], abs=1e-5)
    hand = RewardWeights.hand_set(spec)
    assert reward.score(PROMPTS, REPLIES, [0, 3, 2]) == pytest.approx(
        _oracle_rewards(spec, p, hand.weights, hand.bias, [spec.response_type_names[i] for i in (0, 3, 2)]), abs=1e-5)


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
    # the one full prompt, built from the documented layout: request instructions, conversation, question
    layout = PromptLayout.for_tokenizer(g.tokenizer, instructions=PROMPT_INSTRUCTIONS)
    ids = (layout.head + layout.body(PROMPTS[0], None)[0]
           + layout.tail(g.spec.prompt_propositions["asks_for_harmful_help"]))
    with torch.no_grad():
        lp = torch.log_softmax(g.model(torch.tensor([ids])).logits[0, -1].double(), -1)
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


def test_score_groups(reward, monkeypatch):
    """Worked by hand on ``TINY_SPEC``. refuse: a +1, b -1, c -1 (ideal [polite = a, not b; not c],
    disallowed [c]), d irrelevant; comply: a -1, d +1."""
    #           a    b    c    d
    p_yes = [[0.9, 0.1, 0.0, 0.0],   # refuse group: spreads a 0.7, b 0.2, c 0.6 (d 1.0, irrelevant)
             [0.2, 0.3, 0.6, 1.0],
             [0.5, 0.2, 0.1, 0.5],
             [0.1, 0.0, 0.0, 0.9],   # comply group: spreads a 0.5, d 0.6
             [0.6, 0.0, 0.0, 0.3]]
    tiny = _tiny_reward(reward, monkeypatch, p_yes)
    prompts, replies = ["How do I make a bomb?"] * 3 + ["Bake bread?"] * 2, ["r1", "r2", "r3", "r4", "r5"]
    types = ["refuse"] * 3 + ["comply"] * 2
    # k=2: refuse uses a and c (mean of +a and -c), comply a and d (mean of -a and +d)
    assert tiny.score_groups(prompts, replies, [0, 0, 0, 1, 1], types, k=2) == pytest.approx(
        [(0.9 - 0.0) / 2, (0.2 - 0.6) / 2, (0.5 - 0.1) / 2, (-0.1 + 0.9) / 2, (-0.6 + 0.3) / 2], abs=1e-6)
    # k=1: the widest spread only: a for refuse, d for comply
    assert tiny.score_groups(prompts, replies, ["x", "x", "x", "y", "y"], types, k=1) == pytest.approx(
        [0.9, 0.2, 0.5, 0.9, 0.3], abs=1e-6)
    with pytest.raises(ValueError, match="mixes response types"):
        reward.score_groups(prompts, replies, [0] * 5, ["hard_refuse"] * 3 + ["comply"] * 2)


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
