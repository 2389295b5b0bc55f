"""Decode linears (skinny_linear, decode_linears) on every backend against float64 PyTorch, plus their
bad-input errors."""
import pytest
import torch

import rbr_fast.ops as ops
from common import DEVICE, close


@pytest.mark.parametrize("M,K,N", [(1, 8, 5), (3, 13, 301), (8, 576, 1000), (11, 64, 97), (16, 33, 7), (40, 20, 9)])
@pytest.mark.parametrize("bias", [False, True])
def test_skinny_linear(backend, M, K, N, bias):
    g = torch.Generator().manual_seed(M * 1000 + K)
    x, w = torch.randn(M, K, generator=g), torch.randn(N, K, generator=g)
    b = torch.randn(N, generator=g) if bias else None
    x[0, 0] = 1e30  # extreme values pass through like F.linear's
    want = torch.nn.functional.linear(x.double(), w.double(), None if b is None else b.double())
    got = ops.skinny_linear(x.to(DEVICE), w.to(DEVICE), None if b is None else b.to(DEVICE))
    close(got, want, 1e-4, rtol=1e-5)


def test_skinny_linear_bad_inputs():
    with pytest.raises(ValueError, match="`weight` must be \\[V, H\\]"):
        ops.skinny_linear(torch.randn(2, 3), torch.randn(4, 5))
    with pytest.raises(TypeError, match="float32 only"):
        ops.skinny_linear(torch.randn(2, 3, dtype=torch.bfloat16), torch.randn(4, 3, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="`hidden` is empty"):
        ops.skinny_linear(torch.randn(0, 3), torch.randn(4, 3))


def test_decode_linears_same_generation():
    """Greedy generation through ``decode_linears`` = plain generation (same tokens), and the layers
    are restored afterwards."""
    from rbr_fast.bench import tiny_lm
    m = tiny_lm.model(seed=1)
    ids = torch.tensor([[5, 9, 30, 41], [7, 7, 8, 100]])
    kw = dict(max_new_tokens=12, do_sample=False, pad_token_id=0)
    want = m.generate(ids, **kw)
    with ops.decode_linears(m):
        got = m.generate(ids, **kw)
    assert torch.equal(got, want)
    assert not any("forward" in l.__dict__ for l in m.modules() if isinstance(l, torch.nn.Linear))
