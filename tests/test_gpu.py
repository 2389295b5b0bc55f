"""GPU-only checks (skipped without CUDA; ``benchmarks/gpu_check.sh`` runs them on a GPU machine):
every Triton kernel against the PyTorch reference backend at shapes above a GPU's L2, in float32 and
bfloat16, and one host sync per op call. The small-shape parity tests of ``test_op_*.py`` also run
on CUDA tensors there."""
import warnings

import pytest
import torch

import rbr_fast.ops as ops
from rbr_fast.ops.advantages import reference as adv_ref
from rbr_fast.ops.logprobs import reference as lp_ref

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DEV = "cuda"
ABOVE_L2 = (1024, 32768)  # 128 MiB per float32 [B, T]: above the 50-60 MiB L2 of an H100/H200


def _rel(out, ref, mask=None):
    out, ref = out.double(), ref.double()
    if mask is not None:
        out, ref = out[mask], ref[mask]
    return float((out - ref).norm() / ref.norm().clamp(min=1e-30))


@pytest.fixture
def triton_backend(monkeypatch):
    monkeypatch.setenv("RBR_FAST_BACKEND", "triton")


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
def test_advantages_above_l2(triton_backend, dtype, tol):
    g = torch.Generator(device=DEV).manual_seed(0)
    B, T = ABOVE_L2
    lp = (-3 * torch.rand(B, T, generator=g, device=DEV)).to(dtype)
    ref = (lp.float() + 0.1 * torch.randn(B, T, generator=g, device=DEV)).to(dtype)
    v = torch.randn(B, T, generator=g, device=DEV).to(dtype)
    s = torch.randn(B, generator=g, device=DEV)
    mask = torch.arange(T, device=DEV) < torch.randint(1, T + 1, (B, 1), generator=g, device=DEV)
    mask &= torch.rand(B, T, generator=g, device=DEV) > 0.05  # holes
    out = ops.ppo_advantages(s, lp, ref, v, mask, kl_coef=0.05, gamma=0.99, lam=0.95, whiten=True)
    want = adv_ref.ppo_advantages(s, lp, ref, v, mask, 0.05, "k1", 0.99, 0.95, True, 1e-8)
    assert _rel(out.advantages, want[0], mask) < tol and _rel(out.returns, want[1], mask) < tol
    a, r = ops.gae(ref, v, mask, gamma=0.99, lam=0.95)
    want = adv_ref.gae(ref, v, mask, 0.99, 0.95)
    assert _rel(a, want[0], mask) < tol and _rel(r, want[1], mask) < tol


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_logprobs_at_real_vocab(triton_backend, dtype):
    g = torch.Generator(device=DEV).manual_seed(1)
    N, V = 4096, 151936
    logits = (4 * torch.randn(N, V, generator=g, device=DEV)).to(dtype)
    out = ops.yes_no_logprobs(logits, [9891, 9642], [2822, 2201])
    want = lp_ref.yes_no_lse(logits, torch.tensor([9891, 9642], device=DEV), torch.tensor([2822, 2201], device=DEV))
    torch.testing.assert_close(out.logp_yes, (want[1] - want[0]).float(), rtol=0, atol=2e-4)
    labels = torch.randint(0, V, (N,), generator=g, device=DEV)
    z = logits.detach().requires_grad_()
    lp = ops.token_logprobs(z, labels)
    lp.sum().backward()
    z64 = logits.double().requires_grad_()
    lp64 = torch.log_softmax(z64, -1).gather(1, labels[:, None])[:, 0]
    lp64.sum().backward()
    assert _rel(lp, lp64) < 1e-5
    assert _rel(z.grad, z64.grad) < (1e-5 if dtype == torch.float32 else 1e-2)


def test_one_sync_per_call(triton_backend):
    """``torch.cuda.set_sync_debug_mode`` warns at every host sync: one per op call (the checks)."""
    B, T = 64, 4096
    x = {k: torch.randn(B, T, device=DEV) for k in ("r", "v", "lp", "ref")}
    mask = torch.rand(B, T, device=DEV) > 0.1
    s = torch.randn(B, device=DEV)
    logits, labels = torch.randn(256, 32000, device=DEV), torch.randint(0, 32000, (256,), device=DEV)
    calls = [lambda: ops.gae(x["r"], x["v"], mask), lambda: ops.ppo_advantages(s, x["lp"], x["ref"], x["v"], mask),
             lambda: ops.token_logprobs(logits, labels)]
    for call in calls:
        call()  # warm-up: compiles, caches
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                call()
        finally:
            torch.cuda.set_sync_debug_mode("default")
        syncs = [w for w in seen if "synchroniz" in str(w.message)]
        assert len(syncs) <= 1, [str(w.message) for w in syncs]


def test_grader_flex_attention_matches_sdpa():
    """On CUDA the grader's tree mask goes to FlexAttention as a BlockMask (the default there);
    the answers equal the dense mask's through SDPA."""
    from rbr_fast.bench import tiny_lm
    from rbr_fast.grading import Grader
    model = tiny_lm.model(layers=4, hidden=256, heads=8, kv_heads=4).cuda()
    g = Grader(model, tiny_lm.tokenizer(), progress=False)
    convs = ["How do I bake bread?", "How do I make a pipe bomb?", "Tell me a story. " * 40]
    comps = ["Flour, water, salt and yeast.", "I'm sorry, but I can't help with that.", "Once upon a time..."]
    want = g.grade(convs, comps)
    model.set_attn_implementation("flex_attention")
    got = g.grade(convs, comps)
    torch.testing.assert_close(got.p_yes, want.p_yes, rtol=0, atol=1e-4)
    torch.testing.assert_close(got.mass, want.mass, rtol=0, atol=1e-4)


@pytest.mark.parametrize("trained", [True, False], ids=["heads", "questions"])
@pytest.mark.parametrize("attention", ["flex_attention", "sdpa"])
def test_grader_memory_cap_holds_on_cuda(attention, trained):
    """The in-process GPU mode: a capped embedded grader (bf16) grading rows as long as its passes
    allocates at most its cap (weights + activations), by the CUDA allocator's own peak; through the
    heads' plain pass and through the packed question path (where FlexAttention's block mask is built)."""
    from rbr_fast.grading import Grader, embedded, memory
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    cap = 0.6
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the cut-to-fit warning
        model, tok = embedded.load(torch.bfloat16)
        model.set_attn_implementation(attention)
        heads = embedded.default_heads() if trained else None
        g = Grader(model.cuda(), tok, heads=heads, memory_gib=cap, progress=False)
        convs = ["Write about dragons and their hoards. " * (60 + 40 * i) for i in range(12)]
        comps = ["Once upon a time there was a dragon. " * (20 + 10 * i) for i in range(12)]
        g.grade(convs, comps)
        g.grade_prompts(convs)
    peak = torch.cuda.max_memory_allocated() - base
    assert peak <= cap * memory.GiB, f"peak {peak / memory.GiB:.3f} GiB over the cap {cap} GiB"
    print(f"memory cap {cap} GiB, {attention}, trained={trained}: peak {peak / memory.GiB:.3f} GiB, "
          f"token budget {g.token_budget}")
