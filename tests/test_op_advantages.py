"""Every backend of the advantage ops against the float64 oracle, on fresh random inputs."""
import numpy as np
import pytest
import torch

import rbr_fast.ops as ops
from common import DEVICE
import oracle

SHAPES = [(1, 1), (1, 7), (3, 1), (5, 37), (9, 129), (17, 70)]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
TOL = {torch.float32: 2e-5, torch.bfloat16: 2e-2, torch.float16: 4e-3}  # |out - ref| / |ref|


def make_mask(B, T, gen, kind="random"):
    """Random masks that exercise every layout: holes, all-false rows, left and right padding."""
    pos = torch.arange(T)[None]
    if kind == "right":
        lengths = torch.randint(0, T + 1, (B, 1), generator=gen)
        return pos < lengths
    if kind == "runs":
        # long valid runs as PPO batches have them (left and right padding, one masked span each):
        # whole vectors of valid steps, of masked ones, and vectors that mix both at the edges
        a, b, c, d = torch.randint(0, T + 1, (4, B, 1), generator=gen).sort(dim=0).values
        return (pos >= a) & (pos < d) & ~((pos >= b) & (pos < c))
    m = torch.rand(B, T, generator=gen) > 0.3
    if B > 1:
        m[1] = False  # an all-false row
    if B > 2:
        m[2] = True
    if B > 3 and T > 2:
        m[3, : T // 2] = False  # left padding
    return m


def rand(B, T, gen, dtype=torch.float32, scale=1.0):
    return (torch.randn(B, T, generator=gen) * scale).to(dtype).to(DEVICE)


def rel_err(out, ref, mask, scale=None):
    """Norm-relative error at valid positions (relative to ``scale`` when given: the size of the
    terms that cancel in ``ref``); masked positions must be exactly 0."""
    out = out.detach().double().cpu().numpy()
    assert not np.isnan(out).any(), "NaN in output (an element was not written?)"
    m = np.asarray(mask.cpu())
    assert (out[~m] == 0).all(), "masked positions must be 0"
    return np.linalg.norm(out - ref) / max(np.linalg.norm(ref if scale is None else scale), 1e-30)


def f64(x):
    return x.double().cpu().numpy()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_gae(backend, poisoned, shape, dtype):
    gen = torch.Generator().manual_seed(hash((shape, str(dtype))) % 2**31)
    B, T = shape
    r, v = rand(B, T, gen, dtype), rand(B, T, gen, dtype)
    m = make_mask(B, T, gen).to(DEVICE)
    adv, ret = ops.gae(r, v, m, gamma=0.99, lam=0.9)
    assert adv.dtype == ret.dtype == dtype and adv.shape == ret.shape == (B, T)
    ref_adv, ref_ret = oracle.gae(f64(r), f64(v), m.cpu(), 0.99, 0.9)
    assert rel_err(adv, ref_adv, m) < TOL[dtype]
    assert rel_err(ret, ref_ret, m) < TOL[dtype]


@pytest.mark.parametrize("gamma,lam", [(1.0, 1.0), (0.0, 0.95), (1.0, 0.0), (0.5, 0.5)])
def test_gae_extremes(backend, poisoned, gamma, lam):
    gen = torch.Generator().manual_seed(7)
    B, T = 10, 150
    r = rand(B, T, gen, scale=1e-6)
    v = rand(B, T, gen, scale=1e4)
    m = make_mask(B, T, gen)
    # garbage at masked positions must be ignored
    r[~m] = float("nan")
    v[~m] = float("inf")
    adv, ret = ops.gae(r, v, m.to(DEVICE), gamma=gamma, lam=lam)
    v0 = np.nan_to_num(f64(v), posinf=0)
    ref_adv, ref_ret = oracle.gae(np.nan_to_num(f64(r)), v0, m, gamma, lam)
    assert rel_err(adv, ref_adv, m) < 1e-5
    # returns = adv + values cancel down to the reward scale (1e-6); fp32 keeps them to ~eps*|values|
    assert rel_err(ret, ref_ret, m, scale=v0 * np.asarray(m)) < 1e-5


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gamma,lam", [(0.99, 0.95), (1.0, 1.0), (0.0, 0.9)])
def test_gae_runs(backend, poisoned, dtype, gamma, lam):
    """Rows of long valid runs: the vectorised steps of the C++ kernel (whole valid, whole masked and
    mixed vectors) against the oracle, with garbage at masked positions."""
    gen = torch.Generator().manual_seed(12)
    B, T = 9, 301
    r, v = rand(B, T, gen, dtype), rand(B, T, gen, dtype)
    m = make_mask(B, T, gen, kind="runs")
    m[0], m[1] = True, False
    r[~m.to(DEVICE)], v[~m.to(DEVICE)] = float("nan"), float("inf")
    adv, ret = ops.gae(r, v, m.to(DEVICE), gamma=gamma, lam=lam)
    ref_adv, ref_ret = oracle.gae(np.nan_to_num(f64(r)), np.nan_to_num(f64(v), posinf=0), m, gamma, lam)
    assert rel_err(adv, ref_adv, m) < TOL[dtype] and rel_err(ret, ref_ret, m) < TOL[dtype]
    s, lp = torch.randn(B, generator=gen), rand(B, T, gen, dtype) - 2
    out = ops.ppo_advantages(s.to(DEVICE), lp, r, v, m.to(DEVICE), kl_coef=0.05, gamma=gamma, lam=lam, whiten=True)
    adv, ret, kl = oracle.ppo_advantages(f64(s), f64(lp), np.nan_to_num(f64(r)), np.nan_to_num(f64(v), posinf=0), m,
                                         0.05, "k1", gamma, lam, True, 1e-8)
    assert rel_err(out.advantages, adv, m) < TOL[dtype] and rel_err(out.returns, ret, m) < TOL[dtype]


def test_gae_right_padding_and_noncontiguous(backend, poisoned):
    gen = torch.Generator().manual_seed(3)
    B, T = 12, 90
    r = rand(T, B, gen).t()  # non-contiguous [B, T] views
    v = rand(B, 2 * T, gen)[:, ::2]
    m = make_mask(B, T, gen, kind="right").to(DEVICE)
    assert not r.is_contiguous() and not v.is_contiguous()
    adv, ret = ops.gae(r, v, m, gamma=1.0, lam=0.95)
    ref_adv, ref_ret = oracle.gae(f64(r), f64(v), m.cpu(), 1.0, 0.95)
    assert rel_err(adv, ref_adv, m) < 1e-5 and rel_err(ret, ref_ret, m) < 1e-5


def test_gae_mixed_dtypes(backend, poisoned):
    gen = torch.Generator().manual_seed(4)
    r, v = rand(6, 40, gen, torch.float32), rand(6, 40, gen, torch.bfloat16)
    m = make_mask(6, 40, gen).to(DEVICE)
    adv, _ = ops.gae(r, v, m)
    assert adv.dtype == torch.float32
    ref_adv, _ = oracle.gae(f64(r), f64(v), m.cpu(), 1.0, 0.95)
    assert rel_err(adv, ref_adv, m) < 1e-5


@pytest.mark.parametrize("shape", SHAPES[3:])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shift_mean", [True, False])
def test_masked_whiten(backend, poisoned, shape, dtype, shift_mean):
    gen = torch.Generator().manual_seed(11)
    x = rand(*shape, gen, dtype, scale=3.0) + 5.0
    m = make_mask(*shape, gen).to(DEVICE)
    out = ops.masked_whiten(x, m, shift_mean=shift_mean)
    assert out.dtype == dtype
    assert rel_err(out, oracle.whiten(f64(x), m.cpu(), shift_mean, 1e-8), m) < TOL[dtype]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("est", ["k1", "k2", "k3"])
def test_shape_rewards(backend, poisoned, shape, est):
    gen = torch.Generator().manual_seed(5)
    B, T = shape
    lp, ref = rand(B, T, gen) - 2, rand(B, T, gen) - 2
    s = torch.randn(B, generator=gen).to(DEVICE)
    m = make_mask(B, T, gen).to(DEVICE)
    out = ops.shape_rewards(s, lp, ref, m, kl_coef=0.1, kl_estimator=est)
    expect = oracle.shape_rewards(f64(s), f64(lp), f64(ref), m.cpu(), 0.1, est)
    assert rel_err(out, expect, m) < 1e-5


def test_k3_each_element_across_its_range(backend):
    """k3 = expm1(y) - y (y = ref - lp) per element, relative to itself: tiny |y| where the two terms
    cancel, both sides of the series/exp switch at |y| = 1/2, large |y|, and overflow to inf."""
    y = torch.cat([torch.linspace(-100, 100, 4001), torch.linspace(-0.6, 0.6, 2001),
                   torch.tensor([1e-8, -1e-8, 0.0, 3e-4, 88.0, 89.0, 150.0, -200.0])])
    ref = torch.full_like(y, -3.0)
    lp = ref - y
    m = torch.ones(1, y.numel(), dtype=torch.bool)
    got = -ops.shape_rewards(torch.zeros(1).to(DEVICE), lp[None].to(DEVICE), ref[None].to(DEVICE), m.to(DEVICE),
                             kl_coef=1.0, kl_estimator="k3")[0].double().cpu()
    yd = ref.double() - lp.double()
    want = torch.expm1(yd) - yd
    finite = want.float().isfinite()
    assert torch.equal(got.isinf(), ~finite)
    rel = (got - want).abs()[finite] / want.abs()[finite].clamp_min(1e-30)
    assert rel.max() < 2e-5, f"worst at y = {float(yd[finite][rel.argmax()])}"


@pytest.mark.parametrize("shape", SHAPES[2:])
@pytest.mark.parametrize("est", ["k1", "k3"])
@pytest.mark.parametrize("whiten", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_ppo_advantages(backend, poisoned, shape, est, whiten, dtype):
    gen = torch.Generator().manual_seed(6)
    B, T = shape
    lp, ref, v = rand(B, T, gen, dtype) - 2, rand(B, T, gen, dtype) - 2, rand(B, T, gen, dtype)
    s = torch.randn(B, generator=gen).to(DEVICE)
    m = make_mask(B, T, gen).to(DEVICE)
    if whiten and m.sum() < 2:
        m[0, :2] = True
    out = ops.ppo_advantages(s, lp, ref, v, m, kl_coef=0.05, kl_estimator=est, gamma=0.99, lam=0.9, whiten=whiten)
    adv, ret, kl = oracle.ppo_advantages(f64(s), f64(lp), f64(ref), f64(v), m.cpu(), 0.05, est, 0.99, 0.9, whiten, 1e-8)
    assert out.advantages.dtype == dtype and out.kl.dtype == torch.float32 and out.kl.shape == (B,)
    assert rel_err(out.advantages, adv, m) < TOL[dtype]
    assert rel_err(out.returns, ret, m) < TOL[dtype]
    assert np.linalg.norm(f64(out.kl) - kl) <= 1e-4 * max(np.linalg.norm(kl), 1.0)


def test_ppo_advantages_equals_composition(backend):
    """The fused op is exactly the three ops in turn (same backend)."""
    gen = torch.Generator().manual_seed(8)
    B, T = 9, 77
    lp, ref, v = rand(B, T, gen), rand(B, T, gen), rand(B, T, gen)
    s = torch.randn(B, generator=gen).to(DEVICE)
    m = make_mask(B, T, gen).to(DEVICE)
    fused = ops.ppo_advantages(s, lp, ref, v, m, kl_coef=0.1, kl_estimator="k2", whiten=True)
    rew = ops.shape_rewards(s, lp, ref, m, kl_coef=0.1, kl_estimator="k2")
    adv, ret = ops.gae(rew, v, m)
    torch.testing.assert_close(fused.returns, ret, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused.advantages, ops.masked_whiten(adv, m), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["rewards", "values"])
def test_gae_nan_at_valid_position_raises(backend, name):
    gen = torch.Generator().manual_seed(9)
    x = {"rewards": rand(4, 20, gen), "values": rand(4, 20, gen)}
    m = torch.ones(4, 20, dtype=torch.bool, device=DEVICE)
    x[name][2, 5] = float("nan")
    with pytest.raises(ValueError, match=f"`{name}`.*row 2"):
        ops.gae(x["rewards"], x["values"], m)


@pytest.mark.parametrize("name", ["logprobs", "ref_logprobs", "values"])
def test_ppo_nan_at_valid_position_raises(backend, name):
    gen = torch.Generator().manual_seed(10)
    x = {k: rand(4, 20, gen) for k in ("logprobs", "ref_logprobs", "values")}
    m = torch.ones(4, 20, dtype=torch.bool, device=DEVICE)
    x[name][1, 19] = float("inf")
    with pytest.raises(ValueError, match=f"`{name}`.*row 1"):
        ops.ppo_advantages(torch.zeros(4, device=DEVICE), x["logprobs"], x["ref_logprobs"], x["values"], m)
    if name != "values":
        with pytest.raises(ValueError, match=f"`{name}`"):
            ops.shape_rewards(torch.zeros(4, device=DEVICE), x["logprobs"], x["ref_logprobs"], m, kl_coef=0.1)


@pytest.mark.parametrize("op", ["ppo_advantages", "shape_rewards"])
@pytest.mark.parametrize("bad", [float("nan"), 1e39])
def test_nonfinite_score_raises_even_on_an_empty_row(backend, op, bad):
    """A row's score is checked whatever its mask (it has no token to land on when the row is empty),
    in float32, the precision it is used in: a float64 1e39 is inf there."""
    gen = torch.Generator().manual_seed(13)
    lp, ref, v = (rand(4, 20, gen) for _ in range(3))
    m = torch.ones(4, 20, dtype=torch.bool, device=DEVICE)
    m[2] = False
    s = torch.zeros(4, dtype=torch.float64, device=DEVICE)
    s[2] = bad
    call = {"ppo_advantages": lambda: ops.ppo_advantages(s, lp, ref, v, m),
            "shape_rewards": lambda: ops.shape_rewards(s, lp, ref, m, kl_coef=0.1)}[op]
    with pytest.raises(ValueError, match=f"{op}: `scores` contains NaN or inf, first in row 2"):
        call()


@pytest.mark.parametrize("T", [16, 47, 64, 100])
def test_padding_is_zero_in_dirty_out_buffers(backend, T):
    """Rows ending anywhere (on a vector boundary, one short of it, empty, full) and out= buffers full of
    NaN: every output is exact 0 past each row's end, as the oracle is elsewhere."""
    gen = torch.Generator().manual_seed(14)
    ends = sorted({0, 1, 15, 16, 17, 31, 32, T - 1, T} & set(range(T + 1)))
    B = len(ends)
    m = (torch.arange(T)[None] < torch.tensor(ends)[:, None]).to(DEVICE)
    lp, ref, v, r = (rand(B, T, gen) for _ in range(4))
    s = torch.randn(B, generator=gen).to(DEVICE)
    for whiten in (False, True):
        buf = tuple(torch.full((B, T), float("nan"), device=DEVICE) for _ in range(2))
        out = ops.ppo_advantages(s, lp, ref, v, m, gamma=0.99, whiten=whiten, out=buf)
        adv, ret, _ = oracle.ppo_advantages(f64(s), f64(lp), f64(ref), f64(v), m.cpu(), 0.05, "k1", 0.99, 0.95,
                                            whiten, 1e-8)
        assert rel_err(out.advantages, adv, m) < 2e-5 and rel_err(out.returns, ret, m) < 2e-5
    buf = tuple(torch.full((B, T), float("nan"), device=DEVICE) for _ in range(2))
    a, rt = ops.gae(r, v, m, gamma=0.99, out=buf)
    want_a, want_r = oracle.gae(f64(r), f64(v), m.cpu(), 0.99, 0.95)
    assert rel_err(a, want_a, m) < 2e-5 and rel_err(rt, want_r, m) < 2e-5
    x = rand(B, T, gen)
    assert rel_err(ops.masked_whiten(x, m), oracle.whiten(f64(x), m.cpu(), True, 1e-8), m) < 2e-5


@pytest.mark.parametrize("whiten", [False, True])
def test_long_rows_cross_tiles(backend, whiten):
    """Rows longer than one kernel tile (1024 on Triton), holes across tile edges: the carried state
    and the per-tile whitening moments must combine exactly."""
    gen = torch.Generator().manual_seed(11)
    B, T = 3, 2500
    lp, ref, v = rand(B, T, gen) - 2, rand(B, T, gen) - 2, rand(B, T, gen)
    s = torch.randn(B, generator=gen).to(DEVICE)
    m = make_mask(B, T, gen, kind="runs")
    m[1] = make_mask(1, T, gen)
    m[0, 1000:1100] = False  # a hole across the first tile edge
    m[0, 2048:] = False  # a whole trailing tile masked
    m = m.to(DEVICE)
    out = ops.ppo_advantages(s, lp, ref, v, m, kl_coef=0.05, gamma=0.99, lam=0.95, whiten=whiten)
    adv, ret, _ = oracle.ppo_advantages(f64(s), f64(lp), f64(ref), f64(v), m.cpu(), 0.05, "k1", 0.99, 0.95, whiten,
                                        1e-8)
    assert rel_err(out.advantages, adv, m) < 2e-5
    assert rel_err(out.returns, ret, m) < 2e-5
    r = rand(B, T, gen)
    a, rt = ops.gae(r, v, m, gamma=0.99, lam=0.95)
    ref_adv, ref_ret = oracle.gae(f64(r), f64(v), m.cpu(), 0.99, 0.95)
    assert rel_err(a, ref_adv, m) < 2e-5 and rel_err(rt, ref_ret, m) < 2e-5


def test_out_buffers_are_written_and_returned(backend):
    gen = torch.Generator().manual_seed(12)
    B, T = 5, 37
    r, v, lp, ref = (rand(B, T, gen) for _ in range(4))
    s = torch.randn(B, generator=gen).to(DEVICE)
    m = make_mask(B, T, gen).to(DEVICE)
    buf = (torch.full((B, T), 7.0, device=DEVICE), torch.full((B, T), 7.0, device=DEVICE))
    a, rt = ops.gae(r, v, m, out=buf)
    assert a is buf[0] and rt is buf[1]
    fresh = ops.gae(r, v, m)
    assert torch.equal(a, fresh.advantages) and torch.equal(rt, fresh.returns)
    p = ops.ppo_advantages(s, lp, ref, v, m, out=buf)
    assert p.advantages is buf[0]
    torch.testing.assert_close(p.advantages, ops.ppo_advantages(s, lp, ref, v, m).advantages, rtol=0, atol=0)


def test_outputs_reuse_memory_only_once_dropped(monkeypatch):
    """Without out=, the C++ backend hands a call's output memory out again, but only once nothing
    of the caller's (tensor, view, numpy array) still points at it; held results never change.
    CPU tensors whatever DEVICE is: the cache is the C++ backend's, which every build here has."""
    monkeypatch.setenv("RBR_FAST_BACKEND", "cpp")
    gen = torch.Generator().manual_seed(13)
    B, T = 6, 300
    r, v, lp, ref = (torch.randn(B, T, generator=gen) for _ in range(4))
    s = torch.randn(B, generator=gen)
    m = make_mask(B, T, gen, kind="runs")
    ops.release_buffers()
    a, rt = ops.gae(r, v, m)
    ptrs, want = (a.data_ptr(), rt.data_ptr()), (a.clone(), rt.clone())
    del a, rt
    a, rt = ops.gae(r, v, m)
    assert (a.data_ptr(), rt.data_ptr()) == ptrs  # dropped: reused
    held = ops.gae(r, v * 2, m)  # a and rt still held: fresh memory, a and rt untouched
    assert held.advantages.data_ptr() not in ptrs and torch.equal(a, want[0]) and torch.equal(rt, want[1])
    view, arr = a[:, :3], rt.numpy()
    del a, rt, held
    again = ops.gae(r, v * 3, m)
    assert again.advantages.data_ptr() != view.data_ptr() and again.returns.data_ptr() != ptrs[1]
    assert torch.equal(view, want[0][:, :3]) and np.array_equal(arr, want[1].numpy())
    p = ops.ppo_advantages(s, lp, ref, v, m)
    del p
    with torch.inference_mode():  # the same memory, as an inference tensor only inside the mode
        assert ops.ppo_advantages(s, lp, ref, v, m).advantages.is_inference()
    assert not ops.ppo_advantages(s, lp, ref, v, m).advantages.is_inference()
    shared = ops.gae(r, v, m)
    shared.advantages.share_memory_()  # as torch.multiprocessing does before handing it to another process
    moved = shared.advantages.data_ptr()
    del shared
    assert ops.gae(r, v, m).advantages.data_ptr() != moved  # another process may still read it
    ops.release_buffers()
    assert ops.gae(r, v, m).advantages.data_ptr() != again.advantages.data_ptr()
    torch.testing.assert_close(ops.gae(r, v, m).advantages, want[0], rtol=0, atol=0)


def test_out_buffers_are_checked():
    B, T = 4, 9
    r, v = torch.randn(B, T, device=DEVICE), torch.randn(B, T, device=DEVICE)
    m = torch.ones(B, T, dtype=torch.bool, device=DEVICE)
    ok = torch.empty(B, T, device=DEVICE)
    with pytest.raises(TypeError, match="tuple of 2 tensors"):
        ops.gae(r, v, m, out=ok)
    with pytest.raises(TypeError, match="out returns.*dtype"):
        ops.gae(r, v, m, out=(ok, torch.empty(B, T, dtype=torch.float64, device=DEVICE)))
    with pytest.raises(ValueError, match="shape"):
        ops.gae(r, v, m, out=(ok, torch.empty(B, T + 1, device=DEVICE)))
    with pytest.raises(ValueError, match="not contiguous"):
        ops.gae(r, v, m, out=(ok, torch.empty(T, B, device=DEVICE).T))
    with pytest.raises(ValueError, match="shares memory with `rewards`"):
        ops.gae(r, v, m, out=(r, ok))
    with pytest.raises(ValueError, match="returns shares memory with `out advantages`"):
        ops.gae(r, v, m, out=(ok, ok))
