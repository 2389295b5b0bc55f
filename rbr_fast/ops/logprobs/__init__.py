"""Public log-prob ops: the grader's yes/no extraction and per-token log-probs, from logits or
fused with the LM head so that the ``[N, V]`` logits never exist in full.

The kernels (one pass over the vocabulary with an online max/logsumexp) run on the backend chosen
by ``rbr_fast.ops.dispatch``: ``reference.py`` (the definition and the kernel contract), ``cpp.py``
(over ``csrc/logprobs.cpp``) or ``triton.py``. The fused-linear ops are built here from row chunks:
one matmul per chunk (torch's, the fastest there is on each device) followed by the same kernels,
so every backend gets them. Non-finite logits: ``-inf`` is allowed anywhere (masked vocabulary); NaN and
``+inf`` raise ``ValueError``. Token ids are checked on the host before they go to the device, and
each call reads its value checks back once (``validate.Checks``), not once per chunk.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence, Union

import torch

from .. import validate
from ..dispatch import backend_for

Ids = Union[int, Sequence[int], torch.Tensor]
# Default row chunks of the fused-linear ops: as many rows as fit in CHUNK_BYTES of float32 logits,
# rounded down to a multiple of ROW_TILE (the M tile of the GEMMs, so no chunk ends in a ragged tile);
# each chunk re-reads the whole head, so fewer, larger chunks read it fewer times.
CHUNK_BYTES = 64 << 20
ROW_TILE = 64

__all__ = ["yes_no_logprobs", "fused_linear_yes_no", "token_logprobs", "fused_linear_token_logprobs", "YesNo"]


class YesNo(NamedTuple):
    logp_yes: torch.Tensor  # [N] float32: log P(any yes id)
    logp_no: torch.Tensor  # [N] float32: log P(any no id)
    p_yes: torch.Tensor  # [N] float32: P(yes) / (P(yes) + P(no))
    mass: Optional[torch.Tensor]  # [N] float32: P(yes) + P(no); None when not computed


def _ids(op: str, name: str, ids: Ids, vocab: int) -> torch.Tensor:
    """Token ids as a 1-D int64 CPU tensor, checked on the host: non-empty, in range, no duplicates."""
    if isinstance(ids, torch.Tensor):
        if ids.dtype not in (torch.int64, torch.int32) or ids.dim() > 1:
            raise TypeError(f"{op}: `{name}` must be an int, a list of ints or a 1-D integer tensor, "
                            f"got dtype {ids.dtype}, shape {tuple(ids.shape)}")
        t = ids.reshape(-1).to(device="cpu", dtype=torch.int64)
    else:
        try:
            vals = [ids] if isinstance(ids, int) else list(ids)
        except TypeError:
            vals = [ids]
        if any(isinstance(i, bool) or not isinstance(i, int) for i in vals):
            raise TypeError(f"{op}: `{name}` must be an int, a list of ints or a 1-D integer tensor, got {ids!r}")
        t = torch.tensor(vals, dtype=torch.int64)
    if t.numel() == 0:
        raise ValueError(f"{op}: `{name}` is empty; give at least one token id")
    lo, hi = int(t.min()), int(t.max())
    if lo < 0 or hi >= vocab:
        raise ValueError(f"{op}: `{name}` has token id {lo if lo < 0 else hi} outside the vocabulary [0, {vocab})")
    if t.unique().numel() != t.numel():
        raise ValueError(f"{op}: `{name}` lists a token id twice: {t.tolist()}")
    return t


def _answer_ids(op: str, yes_ids: Ids, no_ids: Ids, vocab: int, device: torch.device):
    yes, no = _ids(op, "yes_ids", yes_ids, vocab), _ids(op, "no_ids", no_ids, vocab)
    both = set(yes.tolist()) & set(no.tolist())
    if both:
        raise ValueError(f"{op}: `yes_ids` and `no_ids` share token id(s) {sorted(both)}; an answer token "
                         "cannot count for both")
    return yes.to(device, non_blocking=True), no.to(device, non_blocking=True)


def _bad_rows(checks: validate.Checks, name: str, flags: torch.Tensor) -> None:
    checks.flags(flags, [(name, "NaN or +inf, or a row of only -inf")], note=" (-inf entries are allowed)")


def _yes_no(checks: validate.Checks, logp_yes: torch.Tensor, logp_no: torch.Tensor, need_mass: bool) -> YesNo:
    undefined = torch.isneginf(torch.maximum(logp_yes, logp_no))

    def fail():
        row = int(torch.nonzero(undefined)[0])
        raise ValueError(f"{checks.op}: row {row} puts zero probability on every yes and no id (all -inf logits); "
                         "P(yes) is undefined there")
    checks.add(undefined.any(), fail)
    checks.done()
    p_yes = torch.sigmoid(logp_yes - logp_no)
    mass = torch.exp(torch.logaddexp(logp_yes, logp_no)) if need_mass else None
    return YesNo(logp_yes, logp_no, p_yes, mass)


def yes_no_logprobs(logits: torch.Tensor, yes_ids: Ids, no_ids: Ids) -> YesNo:
    """The grader's answer probabilities from next-token logits, in one pass over the vocabulary.

    Args:
        logits: ``[N, V]`` next-token logits (float32/bfloat16/float16).
        yes_ids, no_ids: token ids that mean "yes" / "no" (an int, a list or a 1-D integer tensor);
            several variants per answer are usual ("Yes", " yes", ...). Disjoint, no duplicates.

    Returns:
        ``YesNo(logp_yes, logp_no, p_yes, mass)``, each ``[N]`` float32:
        ``logp_yes = logsumexp(log_softmax(logits)[yes_ids])`` (likewise ``logp_no``),
        ``p_yes = P(yes) / (P(yes) + P(no))`` computed as a sigmoid of the log-odds, and
        ``mass = P(yes) + P(no)``: how much of the grader's probability fell on a valid answer.
    """
    op = "yes_no_logprobs"
    validate.tensor(op, "logits", logits, ndim=2)
    validate.nonempty(op, "logits", logits)
    yes, no = _answer_ids(op, yes_ids, no_ids, logits.shape[1], logits.device)
    lse, lse_yes, lse_no, flags = backend_for(logits.device, "logprobs").yes_no_lse(logits.contiguous(), yes, no)
    checks = validate.Checks(op)
    _bad_rows(checks, "logits", flags)
    return _yes_no(checks, lse_yes - lse, lse_no - lse, True)


def _chunk(op: str, chunk_size: Optional[int], vocab: int, budget: int) -> int:
    """Rows of logits per chunk: ``chunk_size``, or by default as many as fit in ``budget`` bytes of
    float32 logits, a multiple of ``ROW_TILE`` (at least one tile)."""
    if chunk_size is None:
        return max(ROW_TILE, budget // (4 * vocab) // ROW_TILE * ROW_TILE)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"{op}: `chunk_size` must be a positive int or None, got {chunk_size!r}")
    return chunk_size


def fused_linear_yes_no(hidden: torch.Tensor, weight: torch.Tensor, yes_ids: Ids, no_ids: Ids,
                        bias: Optional[torch.Tensor] = None, need_mass: bool = True,
                        chunk_size: Optional[int] = None) -> YesNo:
    """``yes_no_logprobs(hidden @ weight.T + bias, ...)`` without the ``[N, V]`` logits.

    Args:
        hidden: ``[N, H]`` final hidden states at the answer position. weight: ``[V, H]`` LM head
            (same dtype). bias: optional ``[V]``.
        chunk_size: rows of ``hidden`` per chunk (default: 64 MiB of float32 logits' worth, a multiple of 64).
        need_mass: with True (default) every row of ``weight`` is used, ``chunk_size`` rows of
            ``hidden`` at a time (peak extra memory ``chunk_size x V`` logits), and the result is
            exactly ``yes_no_logprobs``'s. With False only the yes/no rows of ``weight`` are touched,
            O(N*H*k) instead of O(N*H*V): ``p_yes`` is the same, but ``logp_yes``/``logp_no`` are
            then normalised over the answer tokens only and ``mass`` is None. Use it when only the
            normalised P(yes) matters (the RBR features).
    """
    op = "fused_linear_yes_no"
    validate.linear(op, hidden, weight, bias)
    chunk = _chunk(op, chunk_size, weight.shape[0], CHUNK_BYTES)
    yes, no = _answer_ids(op, yes_ids, no_ids, weight.shape[0], hidden.device)
    checks = validate.Checks(op)
    if not need_mass:
        ids = torch.cat([yes, no])
        z = (hidden @ weight[ids].T).float()
        if bias is not None:
            z = z + bias[ids].float()

        def fail():
            raise ValueError(f"{op}: the yes/no logits contain NaN or +inf (check `hidden` and `weight`)")
        checks.add((torch.isnan(z) | (z == float("inf"))).any(), fail)
        lse = torch.logsumexp(z, dim=1)
        k = yes.numel()
        return _yes_no(checks, torch.logsumexp(z[:, :k], dim=1) - lse, torch.logsumexp(z[:, k:], dim=1) - lse, False)
    kernel = backend_for(hidden.device, "logprobs").yes_no_lse
    out = torch.empty(3, hidden.shape[0], dtype=torch.float32, device=hidden.device)
    flags = torch.empty(hidden.shape[0], dtype=torch.int32, device=hidden.device)
    for s in range(0, hidden.shape[0], chunk):
        logits = torch.nn.functional.linear(hidden[s:s + chunk], weight, bias)
        out[0, s:s + chunk], out[1, s:s + chunk], out[2, s:s + chunk], flags[s:s + chunk] = kernel(logits, yes, no)
    _bad_rows(checks, "hidden @ weight.T", flags)
    return _yes_no(checks, out[1] - out[0], out[2] - out[0], True)


def _check_labels(checks: validate.Checks, labels, lead: torch.Size, vocab: int, device: torch.device,
                  ignore_index: int):
    """Type, shape and device now; the range of the values joins ``checks`` (read back with the kernel's)."""
    op = checks.op
    if not isinstance(labels, torch.Tensor) or labels.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{op}: `labels` must be an integer tensor, got "
                        f"{labels.dtype if isinstance(labels, torch.Tensor) else type(labels).__name__}")
    if labels.shape != lead:
        raise ValueError(f"{op}: `labels` must have shape {tuple(lead)} (the logits' leading dims), "
                         f"got {tuple(labels.shape)}")
    if labels.device != device:
        raise ValueError(f"{op}: `labels` is on {labels.device} but the logits are on {device}")
    flat = labels.reshape(-1).to(torch.int64)
    bad = ((flat < 0) | (flat >= vocab)) & (flat != ignore_index)

    def fail():
        i = int(torch.nonzero(bad)[0])
        raise ValueError(f"{op}: `labels` holds {int(flat[i])} at flat index {i}, outside the vocabulary "
                         f"[0, {vocab}) and not ignore_index={ignore_index}")
    checks.add(bad.any(), fail)
    return flat


def _temperature(op: str, temperature) -> float:
    t = validate.number(op, "temperature", temperature)
    if t <= 0:
        raise ValueError(f"{op}: `temperature` must be > 0, got {t}")
    return t


class _TokenLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, labels, inv_temp, ignore_index, checks):
        be = backend_for(logits.device, "logprobs")
        logp, lse, _, flags = be.label_logprobs(logits, labels, inv_temp, ignore_index)
        _bad_rows(checks, "logits", flags)
        checks.done()
        ctx.save_for_backward(logits, labels, lse)
        ctx.inv_temp, ctx.ignore_index = inv_temp, ignore_index
        return logp

    @staticmethod
    def backward(ctx, grad):
        logits, labels, lse = ctx.saved_tensors
        be = backend_for(logits.device, "logprobs")
        g = be.label_logprobs_backward(grad.contiguous(), logits, labels, lse, ctx.inv_temp, ctx.ignore_index)
        return g, None, None, None, None


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0,
                   ignore_index: int = -100) -> torch.Tensor:
    """Log-probability of each label under ``softmax(logits / temperature)`` (selective log-softmax).

    Args:
        logits: ``[..., V]`` (float32/bfloat16/float16). labels: integer ``[...]``; positions equal
            to ``ignore_index`` give 0 and no gradient.
        temperature: > 0; the sampling temperature the tokens were drawn at.

    Returns:
        float32 ``[...]``. Differentiable w.r.t. ``logits`` with a one-pass backward kernel that
        writes the gradient directly (no ``[..., V]`` float32 temporaries besides it).
    """
    op = "token_logprobs"
    if not isinstance(logits, torch.Tensor) or logits.dim() < 1:
        raise TypeError(f"{op}: `logits` must be a tensor of shape [..., V], got "
                        f"{type(logits).__name__ if not isinstance(logits, torch.Tensor) else tuple(logits.shape)}")
    validate.tensor(op, "logits", logits, ndim=logits.dim())
    validate.nonempty(op, "logits", logits)
    checks = validate.Checks(op)
    flat = _check_labels(checks, labels, logits.shape[:-1], logits.shape[-1], logits.device, ignore_index)
    inv = 1.0 / _temperature(op, temperature)
    z = logits.reshape(-1, logits.shape[-1]).contiguous()
    return _TokenLogprobs.apply(z, flat.contiguous(), inv, ignore_index, checks).reshape(labels.shape)


# torch.addmm with out_dtype=float32 from bf16/fp16 operands: CUDA, torch >= 2.8
_MM_OUT_DTYPE = tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 8)


def _accumulate_fp32(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """``acc += a @ b`` in place for a float32 ``acc``, the product never rounded to ``a``'s dtype and
    never a fresh ``acc``-sized temporary: with half-precision operands, a float32-output GEMM on CUDA,
    elsewhere the (chunk-sized) operands upcast."""
    if a.dtype == acc.dtype:
        acc.addmm_(a, b)
    elif _MM_OUT_DTYPE and acc.is_cuda:
        torch.addmm(acc, a, b, out_dtype=torch.float32, out=acc)
    else:
        acc.addmm_(a.float(), b.float())


class _FusedLinearTokenLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, inv_temp, ignore_index, chunk, checks):
        be = backend_for(hidden.device, "logprobs")
        N = hidden.shape[0]
        logp, lse, ent = (torch.empty(N, dtype=torch.float32, device=hidden.device) for _ in range(3))
        flags = torch.empty(N, dtype=torch.int32, device=hidden.device)
        for s in range(0, N, chunk):
            logits = torch.nn.functional.linear(hidden[s:s + chunk], weight, bias)
            logp[s:s + chunk], lse[s:s + chunk], ent[s:s + chunk], flags[s:s + chunk] = be.label_logprobs(
                logits, labels[s:s + chunk], inv_temp, ignore_index)
        _bad_rows(checks, "hidden @ weight.T", flags)
        checks.done()
        ctx.save_for_backward(hidden, weight, bias, labels, lse, ent)
        ctx.inv_temp, ctx.ignore_index, ctx.chunk = inv_temp, ignore_index, chunk
        ctx.set_materialize_grads(False)  # an unused entropy output costs nothing in backward
        return logp, ent

    @staticmethod
    def backward(ctx, grad, grad_ent):
        hidden, weight, bias, labels, lse, ent = ctx.saved_tensors
        be = backend_for(hidden.device, "logprobs")
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        if grad is None and grad_ent is None:
            return (None,) * 8
        if grad is None:
            grad = torch.zeros_like(lse)
        grad_h = torch.empty_like(hidden) if need_h else None
        # weight/bias gradients accumulate over chunks in float32, cast once at the end
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        grad_b = torch.zeros(weight.shape[0], dtype=torch.float32, device=weight.device) if need_b else None
        grad = grad.contiguous()
        for s in range(0, hidden.shape[0], ctx.chunk):
            h = hidden[s:s + ctx.chunk]
            logits = torch.nn.functional.linear(h, weight, bias)  # recomputed: never stored for all rows
            g = be.label_logprobs_backward(grad[s:s + ctx.chunk], logits, labels[s:s + ctx.chunk],
                                           lse[s:s + ctx.chunk], ctx.inv_temp, ctx.ignore_index)
            if grad_ent is not None:  # entropy bonus: dH/dz = -inv_temp * p * (log p + H), in PyTorch per chunk
                z = logits.float() * ctx.inv_temp
                p = torch.softmax(z, dim=1)
                ge = (torch.special.xlogy(p, p) + p * ent[s:s + ctx.chunk, None]) * (-ctx.inv_temp)
                g = (g.float() + ge * grad_ent[s:s + ctx.chunk, None].float()).to(g.dtype)
                del z, p, ge
            del logits
            if need_h:
                grad_h[s:s + ctx.chunk] = g @ weight
            if need_w:
                _accumulate_fp32(grad_w, g.T, h)
            if need_b:
                grad_b.add_(g.sum(dim=0, dtype=torch.float32))
        return (grad_h, grad_w.to(weight.dtype) if need_w else None, grad_b.to(bias.dtype) if need_b else None,
                None, None, None, None, None)


def fused_linear_token_logprobs(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                                bias: Optional[torch.Tensor] = None, temperature: float = 1.0,
                                ignore_index: int = -100, chunk_size: Optional[int] = None,
                                return_entropy: bool = False):
    """``token_logprobs(hidden @ weight.T + bias, labels)`` holding at most ``chunk_size`` rows of logits.

    Args:
        hidden: ``[N, H]`` (any leading shape ``[..., H]`` works; it is flattened). weight: ``[V, H]``
            LM head, same dtype. labels: integer, hidden's leading shape. bias: optional ``[V]``.
        chunk_size: rows of logits materialised at a time, forward and backward (default: 64 MiB
            of float32 logits' worth, a multiple of 64; the backward pass also holds that chunk's gradient).
        return_entropy: also return the per-token entropy of ``softmax(logits / temperature)``
            (float32, differentiable: a PPO entropy bonus can use it; its backward recomputes the
            chunk's softmax in PyTorch, and only runs when the entropy is part of the loss).

    Returns:
        float32 log-probs of hidden's leading shape, or ``(logprobs, entropy)``. Differentiable
        w.r.t. ``hidden``, ``weight`` and ``bias``: the backward pass recomputes each chunk's logits.
    """
    op = "fused_linear_token_logprobs"
    if isinstance(hidden, torch.Tensor) and hidden.dim() > 2:
        lead = hidden.shape[:-1]
        hidden = hidden.reshape(-1, hidden.shape[-1])
    else:
        lead = hidden.shape[:1] if isinstance(hidden, torch.Tensor) else None
    validate.linear(op, hidden, weight, bias)
    chunk = _chunk(op, chunk_size, weight.shape[0], CHUNK_BYTES)
    checks = validate.Checks(op)
    flat = _check_labels(checks, labels, lead, weight.shape[0], hidden.device, ignore_index)
    inv = 1.0 / _temperature(op, temperature)
    logp, ent = _FusedLinearTokenLogprobs.apply(hidden.contiguous(), weight, bias, flat.contiguous(), inv,
                                                ignore_index, chunk, checks)
    logp, ent = logp.reshape(lead), ent.reshape(lead)
    return (logp, ent) if return_entropy else logp
