"""Log-prob ops on every backend against float64 PyTorch, plus their bad-input errors."""
import pytest
import torch

import rbr_fast.ops as ops
from common import DEVICE, close
from rbr_fast.ops.dispatch import backend_for
from rbr_fast.ops.logprobs import _TokenLogprobs
from rbr_fast.ops.validate import Checks

SHAPES = [(1, 2), (3, 7), (5, 129), (17, 1000), (4, 4099)]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
ATOL = {torch.float32: 1e-5, torch.bfloat16: 1e-4, torch.float16: 1e-4}  # oracle sees the same rounded inputs


def logits_for(shape, dtype, seed, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g) * scale
    if shape[1] > 8:
        x[0, 1::3] = float("-inf")  # masked vocabulary entries
    return x.to(dtype).to(DEVICE)


def oracle_yes_no(x, yes, no):
    lp = torch.log_softmax(x.double().cpu(), dim=-1)
    ly, ln = torch.logsumexp(lp[:, yes], dim=1), torch.logsumexp(lp[:, no], dim=1)
    return ly, ln, torch.exp(ly) / (torch.exp(ly) + torch.exp(ln)), torch.exp(ly) + torch.exp(ln)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_yes_no_logprobs(backend, poisoned, shape, dtype):
    x = logits_for(shape, dtype, seed=shape[1])
    V = shape[1]
    yes, no = ([0, V - 1][: max(1, min(2, V - 1))], [V // 2 if V > 2 else 1])
    out = ops.yes_no_logprobs(x, yes, no)
    for got, want in zip(out, oracle_yes_no(x, yes, no)):
        assert got.dtype == torch.float32 and got.shape == (shape[0],)
        close(got, want, ATOL[dtype])


def test_yes_no_id_forms_and_extremes(backend, poisoned):
    x = logits_for((6, 300), torch.float32, seed=1)
    x[1] += 1e4  # large offset: needs the max shift
    x[2, 5] = 200.0  # one token takes all the mass
    x[3, 5] = float("-inf")  # the only yes id has zero probability
    want = oracle_yes_no(x, [5], [6, 7])
    for yes, no in [(5, [6, 7]), ([5], torch.tensor([6, 7])), (torch.tensor([5], dtype=torch.int32), (6, 7))]:
        out = ops.yes_no_logprobs(x, yes, no)
        for got, w in zip(out, want):
            close(got, w, 1e-3)  # fp32 logits near 1e4 are only resolved to ~1e-3


@pytest.mark.parametrize("shape", [(1, 5), (7, 130), (3, 2053)])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_token_logprobs_forward_backward(backend, shape, dtype, temperature):
    x = logits_for(shape, dtype, seed=7)
    g = torch.Generator().manual_seed(3)
    labels = torch.randint(0, shape[1], (shape[0],), generator=g)
    labels[0] = 0 if shape[1] <= 8 else 2  # a finite logit (row 0 masks every third entry)
    if shape[0] > 2:
        labels[2] = -100
    labels = labels.to(DEVICE)
    xg = x.clone().requires_grad_()
    out = ops.token_logprobs(xg, labels, temperature=temperature)
    upstream = torch.randn(shape[0], generator=g).to(DEVICE)
    (out * upstream).sum().backward()
    x64 = x.double().cpu().requires_grad_()
    keep = labels.cpu() != -100
    want = torch.log_softmax(x64 / temperature, dim=-1).gather(1, labels.cpu().clamp(min=0)[:, None])[:, 0]
    want = torch.where(keep, want, 0.0)
    (want * upstream.double().cpu()).sum().backward()
    assert out.dtype == torch.float32 and xg.grad.dtype == dtype
    close(out, want, ATOL[dtype])
    close(xg.grad, x64.grad, {torch.float32: 1e-6, torch.bfloat16: 1e-2, torch.float16: 2e-3}[dtype], rtol=1e-2)


def test_token_logprobs_leading_dims(backend):
    x = torch.randn(2, 3, 50).to(DEVICE)
    labels = torch.randint(0, 50, (2, 3)).to(DEVICE)
    out = ops.token_logprobs(x, labels)
    want = torch.log_softmax(x.double(), -1).gather(-1, labels[..., None])[..., 0]
    assert out.shape == (2, 3)
    close(out, want.cpu(), 1e-5)


def test_reference_gradcheck(monkeypatch):
    """The reference backward against finite differences, in float64."""
    monkeypatch.setenv("RBR_FAST_BACKEND", "ref")
    x = torch.randn(4, 9, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 8, -100, 3])
    assert torch.autograd.gradcheck(lambda z: _TokenLogprobs.apply(z, labels, 1 / 0.8, -100, Checks("t")), (x,))


def test_entropy(backend):
    x = logits_for((5, 333), torch.float32, seed=4)
    labels = torch.zeros(5, dtype=torch.int64, device=DEVICE)
    _, _, ent, _ = backend_for(x.device, "logprobs").label_logprobs(x, labels, 1.0, -100)
    p = torch.softmax(x.double().cpu(), -1)
    want = -(p * torch.where(p > 0, p.log(), 0.0)).sum(-1)
    close(ent, want, 1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bias", [False, True])
def test_fused_linear_yes_no(backend, dtype, bias):
    g = torch.Generator().manual_seed(5)
    N, H, V = 11, 24, 301
    h = torch.randn(N, H, generator=g).to(dtype).to(DEVICE)
    w = torch.randn(V, H, generator=g).to(dtype).to(DEVICE)
    b = torch.randn(V, generator=g).to(dtype).to(DEVICE) if bias else None
    yes, no = [3, 10], [200]
    want = ops.yes_no_logprobs(torch.nn.functional.linear(h, w, b), yes, no)
    out = ops.fused_linear_yes_no(h, w, yes, no, bias=b, chunk_size=4)
    for got, ref in zip(out, want):
        close(got, ref.cpu(), 1e-5)
    fast = ops.fused_linear_yes_no(h, w, yes, no, bias=b, need_mass=False)
    assert fast.mass is None
    close(fast.p_yes, want.p_yes.cpu(), 2e-2 if dtype == torch.bfloat16 else 1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_linear_token_logprobs(backend, dtype):
    g = torch.Generator().manual_seed(6)
    N, H, V = 13, 16, 257
    h0 = torch.randn(N, H, generator=g).to(dtype).to(DEVICE)
    w0 = (torch.randn(V, H, generator=g) * 0.3).to(dtype).to(DEVICE)
    b0 = torch.randn(V, generator=g).to(dtype).to(DEVICE)
    labels = torch.randint(0, V, (N,), generator=g).to(DEVICE)
    labels[4] = -100
    up = torch.randn(N, generator=g).to(DEVICE)

    def run(fused):
        h, w, b = (t.clone().requires_grad_() for t in (h0, w0, b0))
        if fused:
            lp, ent = ops.fused_linear_token_logprobs(h, w, labels, bias=b, temperature=0.9, chunk_size=5,
                                                      return_entropy=True)
        else:
            lp, ent = ops.token_logprobs(torch.nn.functional.linear(h, w, b), labels, temperature=0.9), None
        (lp * up).sum().backward()
        return lp, ent, h.grad, w.grad, b.grad

    lp, ent, *grads = run(True)
    lp_ref, _, *grads_ref = run(False)
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    close(lp, lp_ref.cpu(), tol)
    for a, b in zip(grads, grads_ref):
        assert a.dtype == dtype
        close(a, b.float().cpu(), tol, rtol=tol)
    p = torch.softmax(torch.nn.functional.linear(h0, w0, b0).double().cpu() / 0.9, -1)
    close(ent, -(p * p.log()).sum(-1), 1e-4 if dtype == torch.float32 else 5e-2)


def test_fused_linear_entropy_gradient(backend):
    """The entropy output is differentiable (PPO entropy bonus): gradients of a loss on both outputs
    match float64 autograd through the full logits, with a -inf logit column and an ignored row."""
    g = torch.Generator().manual_seed(7)
    N, H, V = 9, 12, 131
    h0, w0 = torch.randn(N, H, generator=g), torch.randn(V, H, generator=g) * 0.5
    b0 = torch.randn(V, generator=g)
    b0[17] = float("-inf")
    labels = torch.randint(0, V, (N,), generator=g)
    labels[labels == 17] = 3
    labels[2] = -100
    u1, u2 = torch.randn(N, generator=g), torch.randn(N, generator=g)

    def loss(lp, ent):
        return (lp * u1).sum() + (ent * u2).sum()

    h, w, b = (t.clone().to(DEVICE).requires_grad_() for t in (h0, w0, b0))
    lp, ent = ops.fused_linear_token_logprobs(h, w, labels.to(DEVICE), bias=b, temperature=0.7, chunk_size=4,
                                              return_entropy=True)
    loss(lp, ent).backward()
    hd, wd = (t.double().requires_grad_() for t in (h0, w0))
    z = torch.nn.functional.linear(hd, wd, b0.double()) / 0.7
    logp = torch.log_softmax(z, -1)
    picked = torch.where(labels != -100, logp.gather(1, labels.clamp(min=0)[:, None])[:, 0], 0.0)
    p = logp.exp()
    ent_ref = -(p * torch.where(p > 0, logp, 0.0)).sum(-1)  # no 0 * -inf in the reference's own gradient
    loss(picked, ent_ref).backward()
    close(ent, ent_ref.detach(), 1e-5)
    close(h.grad, hd.grad, 1e-4, rtol=1e-4)
    close(w.grad, wd.grad, 1e-4, rtol=1e-4)
    # only the entropy in the loss: the log-prob gradient path is skipped, not fed NaN
    h.grad = None
    lp, ent = ops.fused_linear_token_logprobs(h, w, labels.to(DEVICE), return_entropy=True)
    ent.sum().backward()
    assert torch.isfinite(h.grad).all()


# ------------------------------------------------------------------------------------------- bad inputs

def x_ok():
    return torch.randn(3, 20).to(DEVICE)


@pytest.mark.parametrize("yes,no,match", [
    ([20], [1], "`yes_ids` has token id 20 outside"), ([-1], [1], "`yes_ids` has token id -1"),
    ([2, 2], [1], "`yes_ids` lists a token id twice"), ([2, 3], [3], "share token id"),
    ([], [1], "`yes_ids` is empty"), ([1], [], "`no_ids` is empty")])
def test_bad_ids(yes, no, match):
    with pytest.raises(ValueError, match=match):
        ops.yes_no_logprobs(x_ok(), yes, no)


@pytest.mark.parametrize("ids,exc", [(["a"], TypeError), (torch.tensor([1.0]), TypeError), (1.5, TypeError)])
def test_bad_id_types(ids, exc):
    with pytest.raises(exc, match="`yes_ids`"):
        ops.yes_no_logprobs(x_ok(), ids, [1])


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nonfinite_logits_raise(backend, value):
    x = x_ok()
    x[1, 4] = value
    with pytest.raises(ValueError, match="`logits` contains NaN or \\+inf.*row 1"):
        ops.yes_no_logprobs(x, [0], [1])
    with pytest.raises(ValueError, match="row 1"):
        ops.token_logprobs(x, torch.zeros(3, dtype=torch.int64, device=DEVICE))


def test_all_neg_inf_row_raises(backend):
    x = x_ok()
    x[2] = float("-inf")
    with pytest.raises(ValueError, match="row 2"):
        ops.yes_no_logprobs(x, [0], [1])


def test_answer_ids_without_probability_raise(backend):
    x = x_ok()
    x[0, :2] = float("-inf")
    with pytest.raises(ValueError, match="zero probability on every yes and no id"):
        ops.yes_no_logprobs(x, [0], [1])


def test_logits_shape_dtype_errors():
    with pytest.raises(ValueError, match="`logits` must have 2 dimensions"):
        ops.yes_no_logprobs(torch.randn(20), [0], [1])
    with pytest.raises(TypeError, match="`logits` must have dtype"):
        ops.yes_no_logprobs(torch.randn(2, 20, dtype=torch.float64), [0], [1])
    with pytest.raises(ValueError, match="`logits` is empty"):
        ops.yes_no_logprobs(torch.randn(0, 20), [0], [1])


def test_label_errors():
    x = x_ok()
    with pytest.raises(ValueError, match="`labels` holds 20"):
        ops.token_logprobs(x, torch.tensor([0, 20, 1]))
    with pytest.raises(ValueError, match="`labels` must have shape"):
        ops.token_logprobs(x, torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="`labels` must be an integer tensor"):
        ops.token_logprobs(x, torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="`temperature` must be > 0"):
        ops.token_logprobs(x, torch.tensor([0, 1, 2]), temperature=0.0)


def test_linear_errors():
    h, w = torch.randn(3, 8), torch.randn(20, 8)
    with pytest.raises(ValueError, match="`weight` must be \\[V, H\\]"):
        ops.fused_linear_yes_no(h, torch.randn(20, 7), [0], [1])
    with pytest.raises(TypeError, match="`weight` has dtype"):
        ops.fused_linear_yes_no(h, w.bfloat16(), [0], [1])
    with pytest.raises(ValueError, match="`bias` must be"):
        ops.fused_linear_token_logprobs(h, w, torch.zeros(3, dtype=torch.int64), bias=torch.randn(19))
    with pytest.raises(ValueError, match="`chunk_size`"):
        ops.fused_linear_token_logprobs(h, w, torch.zeros(3, dtype=torch.int64), chunk_size=0)
