"""Benchmark cases for the log-prob ops. Sizes are (N rows, V vocabulary); the hidden size of the
fused-linear cases is SmolLM2-135M's (576), and of the ``-llama`` ones Llama-3-8B's (4096, with
V = 128256 as its head). Importing this module registers the cases.

Peers are written here from the algorithms the trainers use: ``log_softmax`` + ``gather`` (most
code), TRL's ``selective_log_softmax`` (imported when trl is installed; its per-row loop for 16-bit
logits is written out as "trl-style row loop") and its chunked LM-head log-probs
(``trl.kernels.chunked_logprob.ChunkedLogProbFunction``, TRL >= 1.16), the fp32 row-chunk loop of verl / OpenRLHF, and
``torch.compile`` of the plain version. Backward cases time forward + backward of one call.
"""
from __future__ import annotations

import torch

from rbr_fast import ops

from .harness import Case, Inputs, Options, Peer, Size, Target, measure, register
from .peers import CompiledPeer, OptionalPeer

SEED = 0
HIDDEN = 576
YES, NO = [19, 4437, 8389], [1007, 2152]  # a few ids per answer, as a tokenizer gives them
VOCAB = 49152


def _logits(size: Size, device: torch.device, dtype: torch.dtype) -> Inputs:
    g = torch.Generator().manual_seed(SEED)
    N, V = size
    x = (torch.randn(N, V, generator=g) * 2).to(dtype).to(device)
    labels = torch.randint(0, V, (N,), generator=g).to(device)
    return {"logits": x, "labels": labels, "yes": [i % V for i in YES], "no": [i % V for i in NO]}


def _linear(size: Size, device: torch.device, dtype: torch.dtype, hidden: int = HIDDEN) -> Inputs:
    g = torch.Generator().manual_seed(SEED)
    N, V = size
    h = torch.randn(N, hidden, generator=g).to(dtype).to(device)
    w = (torch.randn(V, hidden, generator=g) * hidden ** -0.5).to(dtype).to(device)
    labels = torch.randint(0, V, (N,), generator=g).to(device)
    return {"hidden": h, "weight": w, "labels": labels, "yes": [i % V for i in YES], "no": [i % V for i in NO]}


def _answers(logp: torch.Tensor, yes, no):
    """(logp_yes, logp_no, p_yes, mass) from full log-probs: what every peer ends with."""
    ly, ln = logp[:, yes].logsumexp(-1), logp[:, no].logsumexp(-1)
    return ly, ln, torch.sigmoid(ly - ln), torch.exp(torch.logaddexp(ly, ln))


def _bytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


# ------------------------------------------------------------------------------------ yes_no_logprobs

def _ls_gather_yes_no(x: Inputs):
    return _answers(torch.log_softmax(x["logits"].float(), -1), x["yes"], x["no"])


def _chunked_yes_no(x: Inputs, chunk: int = 128):
    """verl / OpenRLHF style: fp32 log_softmax over row chunks to bound the temporaries."""
    outs = [_answers(torch.log_softmax(c.float(), -1), x["yes"], x["no"]) for c in x["logits"].split(chunk)]
    return tuple(torch.cat(o) for o in zip(*outs))


register(Case(
    name="yes_no_logprobs", op="yes_no_logprobs",
    build=lambda size, device: _logits(size, device, torch.float32),
    ours=lambda x: ops.yes_no_logprobs(x["logits"], x["yes"], x["no"]),
    peers={"log_softmax+gather": Peer(_ls_gather_yes_no), "chunked-fp32 (verl)": Peer(_chunked_yes_no),
           "torch.compile(log_softmax+gather)": CompiledPeer(_ls_gather_yes_no)},
    nbytes=lambda x: _bytes(x["logits"]), sizes=[(256, 8192), (1024, VOCAB)], quick_sizes=[(64, 4099)],
    default_size=(128, 8192), tol=1e-5, memory=True, size_label="N x V"),
    Target("yes_no_logprobs", (1024, VOCAB), "log_softmax+gather", 3, "yes_no_logprobs 1024x49152 fp32 vs log_softmax+gather"),
    Target("yes_no_logprobs", (1024, VOCAB), None, 1 / 1.3, "yes_no_logprobs 1024x49152 fp32 floor time / our time"),
)


# -------------------------------------------------------------------------------- fused_linear_yes_no

def _matmul_floor(x: Inputs, opts: Options) -> float:
    """The bare matmul ``hidden @ weight.T`` at this shape and dtype, timed in the same run."""
    h, w = x["hidden"], x["weight"]
    return measure(lambda: h @ w.T, opts.device, opts.target_s, min_reps=2).median_s


def _full_matmul_yes_no(dtype):
    def peer(x: Inputs):
        logits = x["hidden"].to(dtype) @ x["weight"].to(dtype).T
        return _answers(torch.log_softmax(logits.float(), -1), x["yes"], x["no"])
    return peer



register(Case(
    name="fused_linear_yes_no", op="fused_linear_yes_no",
    build=lambda size, device: _linear(size, device, torch.bfloat16),
    ours=lambda x: ops.fused_linear_yes_no(x["hidden"], x["weight"], x["yes"], x["no"]),
    peers={"matmul bf16 + log_softmax": Peer(_full_matmul_yes_no(torch.bfloat16)),
           "matmul fp32 + log_softmax": Peer(_full_matmul_yes_no(torch.float32))},
    nbytes=lambda x: _bytes(x["hidden"], x["weight"]), floor_s=_matmul_floor,
    sizes=[(1024, VOCAB)], quick_sizes=[(64, 4099)], default_size=(64, 8192), tol=2e-2, memory=True,
    size_label="N x V"),
    Target("fused_linear_yes_no", (1024, VOCAB), None, 1 / 1.15, "fused_linear_yes_no 1024x576x49152 bf16: bare matmul / our time"),
    Target("fused_linear_yes_no", (1024, VOCAB), "matmul bf16 + log_softmax", 8,
           "fused_linear_yes_no peak memory: full bf16 path / ours", metric="memory"),
)

register(Case(
    name="fused_linear_yes_no-nomass", op="fused_linear_yes_no",
    build=lambda size, device: _linear(size, device, torch.bfloat16),
    ours=lambda x: ops.fused_linear_yes_no(x["hidden"], x["weight"], x["yes"], x["no"], need_mass=False).p_yes,
    peers={"matmul bf16 + log_softmax": Peer(lambda x: _full_matmul_yes_no(torch.bfloat16)(x)[2]),
           "matmul fp32 + log_softmax": Peer(lambda x: _full_matmul_yes_no(torch.float32)(x)[2])},
    nbytes=lambda x: _bytes(x["hidden"]) + len(x["yes"] + x["no"]) * HIDDEN * 2,
    sizes=[(1024, VOCAB)], quick_sizes=[(64, 4099)], default_size=(64, 8192), tol=2e-2, size_label="N x V"),
    Target("fused_linear_yes_no-nomass", (1024, VOCAB), "matmul bf16 + log_softmax", 100,
           "fused_linear_yes_no without mass vs full bf16 matmul path"),
)


# ------------------------------------------------------------------------------------- token_logprobs

def _fwd_bwd(fn):
    """One forward + backward of ``fn(logits, labels)`` with a fixed upstream gradient; returns
    (log-probs, d logits)."""
    def run(x: Inputs):
        z = x["logits"].detach().requires_grad_()
        out = fn(z, x["labels"])
        out.backward(torch.ones_like(out))
        return out.detach(), z.grad
    return run


def _ls_gather(z, labels):
    return torch.log_softmax(z.float(), -1).gather(-1, labels[:, None])[:, 0]


def _trl_row_loop(z, labels):
    """TRL's selective_log_softmax for 16-bit logits: a log_softmax per row, to bound memory."""
    return torch.stack([torch.log_softmax(r, -1).gather(-1, lab[None])[0] for r, lab in zip(z, labels)]).float()


def _trl(z, labels):
    from trl.trainer.utils import selective_log_softmax
    return selective_log_softmax(z, labels).float()


register(Case(
    name="token_logprobs", op="token_logprobs",
    build=lambda size, device: _logits(size, device, torch.bfloat16),
    ours=_fwd_bwd(ops.token_logprobs),
    peers={"log_softmax+gather (fp32)": Peer(_fwd_bwd(_ls_gather)),
           "trl-style row loop": Peer(_fwd_bwd(_trl_row_loop)),
           "trl.selective_log_softmax": OptionalPeer("trl", _fwd_bwd(_trl)),
           "torch.compile(log_softmax+gather)": CompiledPeer(_fwd_bwd(_ls_gather))},
    nbytes=lambda x: 2 * _bytes(x["logits"]) + _bytes(x["logits"]),  # fwd read, bwd read + write
    sizes=[(2048, VOCAB), (8192, VOCAB)], quick_sizes=[(64, 4099)], default_size=(256, 8192), tol=2e-2,
    memory=True, size_label="N x V"),
    Target("token_logprobs", (8192, VOCAB), "trl-style row loop", 2, "token_logprobs fwd+bwd 8192x49152 vs TRL row loop"),
    Target("token_logprobs", (8192, VOCAB), "trl-style row loop", 2, "token_logprobs peak memory: TRL row loop / ours",
           metric="memory"),
)


# ------------------------------------------------------------------------ fused_linear_token_logprobs

def _linear_fwd_bwd(fn):
    def run(x: Inputs):
        h = x["hidden"].detach().requires_grad_()
        w = x["weight"].detach().requires_grad_()
        out = fn(h, w, x["labels"])
        out.backward(torch.ones_like(out))
        return out.detach(), h.grad, w.grad
    return run


def _trl_chunked(h, w, labels):
    """TRL 1.16's fused LM-head log-probs, called as its ``selective_log_softmax_from_hidden`` does
    (vocabulary tiles of 32768 columns, no extra outputs)."""
    from trl.kernels.chunked_logprob import ChunkedLogProbFunction
    return ChunkedLogProbFunction.apply(h, w, None, labels, 1.0, 32768, None, 1.0, ())[0]


def _liger(h, w, labels):
    """Liger-Kernel's fused linear cross-entropy, per token (its ``reduction="none"`` path)."""
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
    return -LigerFusedLinearCrossEntropyLoss(reduction="none")(w, h, labels)


def _cce(h, w, labels):
    """Cut Cross-Entropy (Apple), per token, with its default gradient filtering."""
    from cut_cross_entropy import linear_cross_entropy
    return -linear_cross_entropy(h, w, labels, reduction="none")


_FUSED_PEERS = {"trl ChunkedLogProbFunction": OptionalPeer("trl.kernels.chunked_logprob", _linear_fwd_bwd(_trl_chunked)),
                "liger FusedLinearCrossEntropy": OptionalPeer("liger_kernel.transformers", _linear_fwd_bwd(_liger),
                                                              cuda_only=True),
                "cut-cross-entropy": OptionalPeer("cut_cross_entropy", _linear_fwd_bwd(_cce), cuda_only=True,
                                                  note="gradient filtering on (its default)")}
LLAMA_HIDDEN, LLAMA_VOCAB, QWEN_VOCAB = 4096, 128256, 151936

# bf16 matmuls are emulated on CPUs without AVX512-BF16/AMX (about 5x slower than fp32 on the
# machine these numbers come from), so the fp32 case is the one run at a large N on such machines
for _dtype, _suffix, _size in ((torch.bfloat16, "", (256, VOCAB)), (torch.float32, "-fp32", (2048, VOCAB))):
    _name = "fused_linear_token_logprobs" + _suffix
    register(Case(
        name=_name, op="fused_linear_token_logprobs",
        build=lambda size, device, dt=_dtype: _linear(size, device, dt),
        ours=_linear_fwd_bwd(ops.fused_linear_token_logprobs),
        peers={"matmul + log_softmax+gather": Peer(_linear_fwd_bwd(lambda h, w, lab: _ls_gather(h @ w.T, lab))),
               "matmul + token_logprobs": Peer(_linear_fwd_bwd(lambda h, w, lab: ops.token_logprobs(h @ w.T, lab))),
               **_FUSED_PEERS},
        nbytes=lambda x: _bytes(x["hidden"], x["weight"]), floor_s=lambda x, o: 3 * _matmul_floor(x, o),
        sizes=[_size], quick_sizes=[(64, 4099)], default_size=(64, 8192), tol=3e-2 if _dtype == torch.bfloat16 else 1e-4,
        memory=True, size_label="N x V"),
        Target(_name, _size, "matmul + log_softmax+gather", 1 / 1.3,
               f"{_name} fwd+bwd {_size[0]}x576x{_size[1]} vs unfused"),
        Target(_name, _size, "matmul + log_softmax+gather", 4, f"{_name} peak memory: unfused / ours", metric="memory"),
    )

# real heads: Llama-3-8B's 4096 x 128256 (and, on a GPU, Qwen2's 151936 vocabulary at H=4096), against
# the strongest fused peers that run on the device
for _dtype, _suffix in ((torch.bfloat16, ""), (torch.float32, "-fp32")):
    _name = "fused_linear_token_logprobs-llama" + _suffix
    register(Case(
        name=_name, op="fused_linear_token_logprobs",
        build=lambda size, device, dt=_dtype: _linear(size, device, dt, LLAMA_HIDDEN),
        ours=_linear_fwd_bwd(ops.fused_linear_token_logprobs), peers=dict(_FUSED_PEERS),
        nbytes=lambda x: _bytes(x["hidden"], x["weight"]), floor_s=lambda x, o: 3 * _matmul_floor(x, o),
        sizes=[(512, LLAMA_VOCAB)], quick_sizes=[(64, 4099)], default_size=(64, 8192),
        gpu_sizes=[(8192, LLAMA_VOCAB), (8192, QWEN_VOCAB)],
        tol=3e-2 if _dtype == torch.bfloat16 else 1e-3, memory=True, size_label="N x V"),
        Target(_name, (512, LLAMA_VOCAB), "trl ChunkedLogProbFunction", 1.0,
               f"{_name} fwd+bwd 512x4096x128256 vs TRL ChunkedLogProbFunction"),
        Target(_name, (512, LLAMA_VOCAB), "trl ChunkedLogProbFunction", 1.0,
               f"{_name} peak memory: TRL ChunkedLogProbFunction / ours", metric="memory"),
    )
