"""The RBR reward kernel in plain PyTorch: the readable definition and the last-resort backend."""
from __future__ import annotations

import torch

NAME = "ref"


def rbr_reward(x, lit_idx, lit_neg, weights, rtype, bias):
    """Features then the per-response-type linear reward.

    ``x`` [N, P] float32; ``lit_idx`` [J, L] int32 (-1 = unused slot) and ``lit_neg`` [J, L] bool
    define J conjunctions appended to the features in order: feature P+j is the product over its
    literals of f[idx] (or 1 - f[idx] when negated), where idx may name an input column or an
    earlier conjunction. reward[n] = bias[rtype[n]] + features[n] . weights[rtype[n]].
    Returns (reward [N] float32, features [N, P+J] float32, flags [N] int32: bit 0 a non-finite
    input, bit 1 an input outside [0, 1])."""
    x = x.float()
    flags = (~torch.isfinite(x)).any(1).to(torch.int32) | (((x < 0) | (x > 1)).any(1).to(torch.int32) << 1)
    cols = list(x.unbind(1))
    for idx, neg in zip(lit_idx.tolist(), lit_neg.tolist()):
        prod = torch.ones(x.shape[0], dtype=torch.float32, device=x.device)
        for i, n in zip(idx, neg):
            if i >= 0:
                prod = prod * (1 - cols[i] if n else cols[i])
        cols.append(prod)
    feats = torch.stack(cols, 1) if cols else x
    w = weights.float()[rtype]
    reward = (feats * w).sum(1) + bias.float()[rtype]
    return reward, feats, flags
