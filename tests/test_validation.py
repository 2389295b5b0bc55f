"""Bad inputs to every public advantage op: the right exception type, and a message naming the argument."""
import pytest
import torch

import oracle
import rbr_fast.ops as ops
from common import DEVICE

B, T = 4, 10


def good():
    g = torch.Generator().manual_seed(0)
    t = lambda: torch.randn(B, T, generator=g).to(DEVICE)  # noqa: E731
    return {"rewards": t(), "values": t(), "logprobs": t(), "ref_logprobs": t(), "x": t(),
            "scores": torch.randn(B, generator=g).to(DEVICE), "mask": torch.ones(B, T, dtype=torch.bool, device=DEVICE)}


CALLS = {
    "gae": (lambda a: ops.gae(a["rewards"], a["values"], a["mask"]), ("rewards", "values", "mask")),
    "masked_whiten": (lambda a: ops.masked_whiten(a["x"], a["mask"]), ("x", "mask")),
    "shape_rewards": (lambda a: ops.shape_rewards(a["scores"], a["logprobs"], a["ref_logprobs"], a["mask"], 0.1),
                      ("scores", "logprobs", "ref_logprobs", "mask")),
    "ppo_advantages": (lambda a: ops.ppo_advantages(a["scores"], a["logprobs"], a["ref_logprobs"], a["values"],
                                                    a["mask"]), ("scores", "logprobs", "ref_logprobs", "values", "mask")),
}
CASES = [(op, arg) for op, (_, args) in CALLS.items() for arg in args]


def check(op, arg, value, exc):
    a = good()
    a[arg] = value(a[arg])
    with pytest.raises(exc, match=f"{op}: .*`{arg}`"):
        CALLS[op][0](a)


@pytest.mark.parametrize("op,arg", CASES)
def test_wrong_rank(op, arg):
    check(op, arg, lambda x: x[None], ValueError)


@pytest.mark.parametrize("op,arg", CASES)
def test_mismatched_shape(op, arg):
    check(op, arg, lambda x: x[:-1], ValueError)


@pytest.mark.parametrize("op,arg", [c for c in CASES if c[1] != "mask"])
def test_wrong_dtype(op, arg):
    check(op, arg, lambda x: x.to(torch.int32), TypeError)


@pytest.mark.parametrize("op,arg", [c for c in CASES if c[1] not in ("mask", "scores")])
def test_float64_per_token_rejected(op, arg):
    check(op, arg, lambda x: x.double(), TypeError)


@pytest.mark.parametrize("op", CALLS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8, torch.int64])
def test_mask_wrong_dtype(op, dtype):
    a = good()
    a["mask"] = a["mask"].to(dtype)
    with pytest.raises(TypeError, match=rf"{op}: `mask`.*mask\.bool\(\)"):
        CALLS[op][0](a)


@pytest.mark.parametrize("op,arg", CASES)
def test_not_a_tensor(op, arg):
    check(op, arg, lambda x: x.tolist(), TypeError)


@pytest.mark.parametrize("op,arg", CASES)
def test_different_device(op, arg):
    check(op, arg, lambda x: x.to("meta"), ValueError)


@pytest.mark.parametrize("op", CALLS)
def test_empty_batch(op):
    a = {k: v[:0] for k, v in good().items()}
    with pytest.raises(ValueError, match=f"{op}: `.*empty"):
        CALLS[op][0](a)


@pytest.mark.parametrize("op,arg", [c for c in CASES if c[1] != "mask"])
def test_nan_at_valid_position(backend, op, arg):
    a = good()
    a[arg] = a[arg].clone()
    a[arg].view(-1)[1] = float("nan")
    with pytest.raises(ValueError, match=f"`{arg}`.*NaN"):
        CALLS[op][0](a)


# the float64 oracle of each call, at the ops' default arguments
ORACLE = {
    "gae": lambda a: oracle.gae(a["rewards"], a["values"], a["mask"], 1.0, 0.95),
    "masked_whiten": lambda a: (oracle.whiten(a["x"], a["mask"], True, 1e-8),),
    "shape_rewards": lambda a: (oracle.shape_rewards(a["scores"], a["logprobs"], a["ref_logprobs"], a["mask"],
                                                     0.1, "k1"),),
    "ppo_advantages": lambda a: oracle.ppo_advantages(a["scores"], a["logprobs"], a["ref_logprobs"], a["values"],
                                                      a["mask"], 0.05, "k1", 1.0, 0.95, True, 1e-8),
}


@pytest.mark.parametrize("op", CALLS)
def test_nan_at_masked_position_is_ignored(backend, op):
    """NaN where the mask is off (right padding, and a left-padded first token) changes nothing: every
    output equals the float64 oracle's, which never reads those positions, and is finite."""
    a = good()
    a["mask"][:, -3:] = False
    a["mask"][0, 0] = False
    for k in ("rewards", "values", "logprobs", "ref_logprobs", "x"):
        a[k][~a["mask"]] = float("nan")
    out = CALLS[op][0](a)
    got = out if isinstance(out, tuple) else (out,)
    want = ORACLE[op]({k: v.cpu().numpy() for k, v in a.items()})
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g.cpu().double(), torch.from_numpy(w), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kw,exc", [({"gamma": 1.5}, ValueError), ({"gamma": float("nan")}, ValueError),
                                    ({"lam": -0.1}, ValueError), ({"gamma": "0.9"}, TypeError)])
def test_bad_gamma_lam(kw, exc):
    a = good()
    with pytest.raises(exc, match=f"gae: `{next(iter(kw))}`"):
        ops.gae(a["rewards"], a["values"], a["mask"], **kw)


def test_bad_kl_estimator_and_coef():
    a = good()
    with pytest.raises(ValueError, match="`kl_estimator`"):
        ops.shape_rewards(a["scores"], a["logprobs"], a["ref_logprobs"], a["mask"], 0.1, kl_estimator="k4")
    with pytest.raises(ValueError, match="`kl_coef`"):
        ops.shape_rewards(a["scores"], a["logprobs"], a["ref_logprobs"], a["mask"], float("inf"))


def test_whiten_needs_two_valid_positions():
    a = good()
    a["mask"][:] = False
    a["mask"][0, 0] = True
    with pytest.raises(ValueError, match="at least 2"):
        ops.masked_whiten(a["x"], a["mask"])


def test_forced_backend_that_cannot_run(monkeypatch):
    monkeypatch.setenv("RBR_FAST_BACKEND", "cpp")
    a = good()
    with pytest.raises(RuntimeError, match="RBR_FAST_BACKEND=cpp"):
        ops.gae(a["rewards"].to("meta"), a["values"].to("meta"), a["mask"].to("meta"))
    monkeypatch.setenv("RBR_FAST_BACKEND", "nope")
    with pytest.raises(RuntimeError, match="RBR_FAST_BACKEND"):
        ops.gae(a["rewards"], a["values"], a["mask"])


def _count_host_reads(monkeypatch):
    """Count reads of tensor values by the host (each one a device sync on a GPU)."""
    calls = []
    for name in ("__bool__", "__int__", "__float__", "item", "tolist"):
        orig = getattr(torch.Tensor, name)

        def counted(self, *a, _orig=orig, _name=name, **k):
            calls.append(_name)
            return _orig(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, name, counted)
    return calls


def test_one_host_read_per_call(monkeypatch):
    """The hot-path ops read their checks back once per call: not per check, not per chunk."""
    import rbr_fast.ops as ops
    g = torch.Generator().manual_seed(0)
    B, T, V, H = 6, 40, 300, 16
    x = {k: torch.randn(B, T, generator=g) for k in ("r", "v", "lp", "ref")}
    m = torch.rand(B, T, generator=g) > 0.2
    s = torch.randn(B, generator=g)
    logits, labels = torch.randn(B * 4, V, generator=g), torch.randint(0, V, (B * 4,), generator=g)
    hidden = torch.randn(B * 4, H, generator=g, requires_grad=True)
    weight = torch.randn(V, H, generator=g)
    # the C++ advantage kernels sum their checks up themselves: nothing is left to read back
    summed = 0 if ops.backend_name("cpu") == "cpp" else 1
    calls = _count_host_reads(monkeypatch)
    for run, reads in ((lambda: ops.gae(x["r"], x["v"], m), summed),
                       (lambda: ops.ppo_advantages(s, x["lp"], x["ref"], x["v"], m), summed),
                       (lambda: ops.masked_whiten(x["r"], m), summed),
                       (lambda: ops.shape_rewards(s, x["lp"], x["ref"], m, kl_coef=0.1), summed),
                       (lambda: ops.token_logprobs(logits, labels), 1),
                       (lambda: ops.fused_linear_token_logprobs(hidden, weight, labels, chunk_size=5), 1)):
        calls.clear()
        run()
        assert len(calls) == reads, calls  # the one read of Checks.done(), if any
