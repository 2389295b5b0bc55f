"""RBR reward ops on every backend against a float64 oracle: the feature-weight reward and the fused
path from proposition probabilities (conjunctions in the kernel); bad inputs."""
import pytest
import torch

from common import DEVICE
from rbr_fast import ops
from rbr_fast.ops import Conjunctions
from rbr_fast.rules import RuleSpec


def oracle(x, idx, neg, weights, rtype, bias):
    """float64, one row and one literal at a time."""
    x, w, b = x.double().cpu(), weights.double().cpu(), bias.double().cpu()
    feats = []
    for row in x:
        f = row.tolist()
        for lits, negs in zip(idx.tolist(), neg.tolist()):
            prod = 1.0
            for i, n in zip(lits, negs):
                if i >= 0:
                    prod *= (1 - f[i]) if n else f[i]
            f.append(prod)
        feats.append(f)
    feats = torch.tensor(feats, dtype=torch.float64).reshape(x.shape[0], -1)
    return (feats * w[rtype.cpu()]).sum(1) + b[rtype.cpu()], feats


def random_conjunctions(P, J, L, g):
    idx = torch.full((J, L), -1, dtype=torch.int32)
    for j in range(J):
        k = int(torch.randint(1, L + 1, (1,), generator=g))
        idx[j, :k] = torch.randperm(P + j, generator=g)[:k].to(torch.int32) if P + j >= k else torch.arange(k) % (P + j)
    neg = torch.rand(J, L, generator=g) < 0.4
    return Conjunctions(idx.to(DEVICE), neg.to(DEVICE))


@pytest.mark.parametrize("N,P,J,L,K", [(1, 1, 1, 1, 1), (37, 23, 22, 7, 4), (300, 5, 0, 1, 3), (129, 40, 60, 12, 5)])
def test_fused_matches_oracle(backend, N, P, J, L, K):
    g = torch.Generator().manual_seed(N + P + J)
    x = torch.rand(N, P, generator=g)
    x[::7, 0] = 0.0  # exact 0 and 1 probabilities
    x[1::7, -1] = 1.0
    conj = random_conjunctions(P, J, L, g)
    w = torch.randn(K, P + J, generator=g) * 3
    b = torch.randn(K, generator=g)
    rt = torch.randint(0, K, (N,), generator=g)
    out = ops.rbr_reward_from_props(x.to(DEVICE), conj, w.to(DEVICE), rt.to(DEVICE), b.to(DEVICE))
    want_r, want_f = oracle(x, conj.idx, conj.neg, w, rt, b)
    torch.testing.assert_close(out.features.cpu().double(), want_f, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.reward.cpu().double(), want_r, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("N,F,K", [(1, 1, 1), (1000, 31, 4), (77, 130, 2)])
def test_feature_weight_reward(backend, N, F, K):
    g = torch.Generator().manual_seed(F)
    feats = torch.randn(N, F, generator=g) * 10  # any values, not only probabilities
    feats[0, 0] = 1e6
    w = torch.randn(K, F, generator=g)
    rt = torch.randint(0, K, (N,), generator=g, dtype=torch.int64).to(torch.int32)
    got = ops.rbr_reward(feats.to(DEVICE), w.to(DEVICE), rt.to(DEVICE))
    want, _ = oracle(feats, torch.zeros(0, 1, dtype=torch.int32), torch.zeros(0, 1, dtype=torch.bool), w, rt.long(),
                     torch.zeros(K))
    torch.testing.assert_close(got.cpu().double(), want, atol=1e-3, rtol=1e-5)


def test_low_precision_inputs(backend):
    g = torch.Generator().manual_seed(3)
    x = torch.rand(50, 9, generator=g)
    w = torch.randn(2, 9, generator=g)
    rt = torch.randint(0, 2, (50,), generator=g)
    for dt in (torch.bfloat16, torch.float16):
        got = ops.rbr_reward(x.to(dt).to(DEVICE), w.to(dt).to(DEVICE), rt.to(DEVICE))
        want, _ = oracle(x.to(dt), torch.zeros(0, 1, dtype=torch.int32), torch.zeros(0, 1, dtype=torch.bool),
                         w.to(dt), rt, torch.zeros(2))
        torch.testing.assert_close(got.cpu().double(), want, atol=1e-4, rtol=1e-4)


def test_default_spec_classes_match_hand_computation(backend):
    spec = RuleSpec.default()
    names = spec.feature_names
    P = len(spec.propositions)
    g = torch.Generator().manual_seed(0)
    p = torch.rand(4, P, generator=g)
    K = len(spec.response_types)
    w = torch.zeros(K, len(names))
    out = ops.rbr_reward_from_props(p.to(DEVICE), spec.conjunctions(DEVICE), w.to(DEVICE),
                                    torch.zeros(4, dtype=torch.long, device=DEVICE))
    col = {n: i for i, n in enumerate(names)}
    val = {n: p[:, i].double() for i, n in enumerate(spec.proposition_names)}
    refuses = val["inability_to_comply"] * (1 - val["fully_complies"])
    clean = (1 - val["judgement"]) * (1 - val["insulting_language"]) * (1 - val["threatening_language"])
    torch.testing.assert_close(out.features[:, col["refuses"]].cpu().double(), refuses, atol=1e-6, rtol=0)
    mas = refuses * clean * (1 - val["disallowed_content"])
    torch.testing.assert_close(out.features[:, col["hard_refuse/minimum_acceptable_style"]].cpu().double(), mas,
                               atol=1e-6, rtol=0)
    assert out.features.shape == (4, len(names)) and torch.equal(out.reward.cpu(), torch.zeros(4))


def test_bad_inputs():
    x = torch.rand(4, 3, device=DEVICE)
    w = torch.zeros(2, 3, device=DEVICE)
    rt = torch.zeros(4, dtype=torch.long, device=DEVICE)
    with pytest.raises(ValueError, match="`weights` must have 3 columns"):
        ops.rbr_reward(x, torch.zeros(2, 4, device=DEVICE), rt)
    with pytest.raises(ValueError, match="`response_type` holds 2, outside"):
        ops.rbr_reward(x, w, torch.full((4,), 2, device=DEVICE))
    with pytest.raises(ValueError, match="`response_type` must have shape"):
        ops.rbr_reward(x, w, rt[:3])
    with pytest.raises(TypeError, match="`response_type` must have dtype"):
        ops.rbr_reward(x, w, rt.float())
    with pytest.raises(ValueError, match="empty"):
        ops.rbr_reward(x[:0], w, rt[:0])
    with pytest.raises(ValueError, match="`bias` must have shape"):
        ops.rbr_reward(x, w, rt, torch.zeros(3, device=DEVICE))
    bad = x.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="`features` contains NaN or inf, first in row 2"):
        ops.rbr_reward(bad, w, rt)
    with pytest.raises(ValueError, match="`weights` contains NaN"):
        ops.rbr_reward(x, w + float("nan"), rt)
    conj = Conjunctions(torch.tensor([[0, 1]], dtype=torch.int32, device=DEVICE),
                        torch.tensor([[False, True]], device=DEVICE))
    w4 = torch.zeros(2, 4, device=DEVICE)
    big = x.clone()
    big[3, 0] = 1.5
    with pytest.raises(ValueError, match="`props` contains a value outside \\[0, 1\\], first in row 3"):
        ops.rbr_reward_from_props(big, conj, w4, rt)
    forward = Conjunctions(torch.tensor([[3]], dtype=torch.int32, device=DEVICE), torch.tensor([[False]], device=DEVICE))
    with pytest.raises(ValueError, match="earlier conjunction"):
        ops.rbr_reward_from_props(x, forward, w4, rt)
    with pytest.raises(TypeError, match="Conjunctions"):
        ops.rbr_reward_from_props(x, (conj.idx, conj.neg), w4, rt)
