"""Benchmark cases for the RBR reward: the fused reward op from proposition probabilities
(default spec: 23 propositions -> 45 features, 4 response types) against the same computation in
plain PyTorch, and weight fitting (10k completions x 30 features, 5 per prompt) against a
per-step gather/scatter formulation. Sizes are (N completions, features or propositions).
Importing this module registers the cases."""
from __future__ import annotations

import torch

from rbr_fast import ops
from rbr_fast.reward import fit_weights, ranked_pairs
from rbr_fast.rules import RuleSpec

from .harness import Case, Inputs, Peer, Size, Target, register

SEED = 0


def _props(size: Size, device: torch.device) -> Inputs:
    g = torch.Generator().manual_seed(SEED)
    spec = RuleSpec.default()
    N, _ = size
    P, K = len(spec.propositions), len(spec.response_types)
    F = len(spec.feature_names)
    return {"p": torch.rand(N, P, generator=g).to(device), "conj": spec.conjunctions(device),
            "w": torch.randn(K, F, generator=g).to(device), "rt": torch.randint(0, K, (N,), generator=g).to(device),
            "spec": spec}


def _fused(x: Inputs):
    out = ops.rbr_reward_from_props(x["p"], x["conj"], x["w"], x["rt"])
    return out.reward, out.features


def _torch_features(x: Inputs):
    """The plain way: one product per derived proposition / class over column slices."""
    spec, p = x["spec"], x["p"]
    cols = dict(zip(spec.proposition_names, p.unbind(1)))
    def conj(lits):
        out = torch.ones_like(p[:, 0])
        for lit in lits:
            out = out * (cols[lit.name] if lit.positive else 1 - cols[lit.name])
        return out
    for name in spec.feature_names[len(spec.propositions):]:
        if "/" in name:
            t, c = name.split("/")
            cls = next(k for k in spec.response_types[t].classes if k.name == c)
            cols[name] = conj(cls.literals)
        else:
            cols[name] = conj(spec.derived[name])
    feats = torch.stack([cols[n] for n in spec.feature_names], 1)
    return (feats * x["w"][x["rt"]]).sum(1), feats


register(Case("rbr_reward_from_props", "rbr_reward_from_props", _props, _fused,
              {"pytorch column products": Peer(_torch_features)},
              nbytes=lambda x: x["p"].numel() * 4 + x["rt"].numel() * 8 + x["p"].shape[0] * (4 + 4 * x["w"].shape[1]),
              sizes=[(4096, 23), (65536, 23)], quick_sizes=[(4096, 23)], default_size=(4096, 23), tol=1e-4,
              size_label="completions x propositions"))


def _comparisons(size: Size, device: torch.device) -> Inputs:
    g = torch.Generator().manual_seed(SEED)
    N, F = size
    per_prompt = 5
    rt = torch.randint(0, 4, (N // per_prompt,), generator=g).repeat_interleave(per_prompt)
    x = torch.rand(N, F, generator=g)
    groups = [i // per_prompt for i in range(N)]
    score = (x * torch.randn(4, F, generator=g)[rt]).sum(1) + 0.3 * torch.randn(N, generator=g)
    ranks = [0] * N
    for s in range(0, N, per_prompt):
        for r, i in enumerate(torch.argsort(score[s:s + per_prompt], descending=True).tolist()):
            ranks[s + i] = r
    pairs, margins = ranked_pairs(groups, ranks)
    return {"x": x, "rt": rt, "pairs": pairs, "margins": margins, "groups": groups, "K": 4}


def _fit(x: Inputs):
    return fit_weights(x["x"], x["rt"], x["pairs"], x["margins"], num_types=x["K"], groups=x["groups"],
                       val_fraction=0.2).weights


def _fit_gather(x: Inputs, steps: int = 400, lr: float = 0.05):
    """The direct formulation: every step recomputes R for all rows with a per-row weight gather."""
    from rbr_fast.reward.fit import split_by_group
    train, _ = split_by_group(x["groups"], 0.2, 0)
    keep = train[x["pairs"][:, 0]] & train[x["pairs"][:, 1]]
    pairs, margins = x["pairs"][keep], x["margins"][keep]
    w = torch.zeros(x["K"], x["x"].shape[1], requires_grad=True)
    opt = torch.optim.AdamW([w], lr=lr, weight_decay=1e-3)
    for _ in range(steps):
        R = (x["x"] * w[x["rt"]]).sum(1)
        loss = torch.relu(margins - (R[pairs[:, 0]] - R[pairs[:, 1]])).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return w.detach()


register(Case("fit_weights", "fit_weights", _comparisons, _fit, {"per-step gather": Peer(_fit_gather)},
              nbytes=lambda x: x["x"].numel() * 4, sizes=[(10000, 30)], quick_sizes=[(2000, 30)],
              default_size=(2000, 30), tol=5e-2, size_label="completions x features", warmup=1),
         Target("fit_weights", (10000, 30), None, 0.0, "fit_weights on 10k x 30 under 5 s", max_seconds=5.0))
