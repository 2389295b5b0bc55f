"""Float64 NumPy oracle for the advantage ops, written from the definitions (not from any backend):
GAE literally removes the masked positions, runs the textbook recursion and scatters back."""
import numpy as np


def gae(rewards, values, mask, gamma, lam):
    r, v, m = (np.asarray(a, dtype=np.float64) for a in (rewards, values, mask))
    m = m.astype(bool)
    adv = np.zeros_like(r)
    for b in range(r.shape[0]):
        idx = np.flatnonzero(m[b])
        rr, vv = r[b, idx], v[b, idx]
        a, last = np.zeros(len(idx)), 0.0
        for i in range(len(idx) - 1, -1, -1):
            nxt = vv[i + 1] if i + 1 < len(idx) else 0.0
            last = rr[i] + gamma * nxt - vv[i] + gamma * lam * last
            a[i] = last
        adv[b, idx] = a
    ret = np.where(m, adv + v, 0.0)
    return adv, ret


def kl(lp, ref, est):
    d = np.asarray(lp, np.float64) - np.asarray(ref, np.float64)
    return {"k1": d, "k2": 0.5 * d * d, "k3": np.expm1(-d) + d}[est]


def shape_rewards(scores, lp, ref, mask, kl_coef, est):
    m = np.asarray(mask, bool)
    rew = np.where(m, -kl_coef * kl(lp, ref, est), 0.0)
    for b in range(m.shape[0]):
        idx = np.flatnonzero(m[b])
        if len(idx):
            rew[b, idx[-1]] += float(scores[b])
    return rew


def whiten(x, mask, shift_mean, eps):
    m = np.asarray(mask, bool)
    xv = np.asarray(x, np.float64)[m]
    mean, var = xv.mean(), xv.var(ddof=1)
    y = (np.asarray(x, np.float64) - mean) / np.sqrt(var + eps)
    if not shift_mean:
        y = y + mean
    return np.where(m, y, 0.0)


def ppo_advantages(scores, lp, ref, values, mask, kl_coef, est, gamma, lam, whiten_adv, eps):
    rew = shape_rewards(scores, lp, ref, mask, kl_coef, est)
    adv, ret = gae(rew, values, mask, gamma, lam)
    if whiten_adv:
        adv = whiten(adv, mask, True, eps)
    klsum = np.where(np.asarray(mask, bool), kl(lp, ref, est), 0.0).sum(axis=1)
    return adv, ret, klsum
