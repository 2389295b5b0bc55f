"""Benchmark cases for the advantage ops: gae, ppo_advantages (fused vs unfused), masked_whiten and
shape_rewards. Importing this module registers them with the harness.

Inputs are float32 ``[B, T]`` from a fixed seed. Masks are right-padded rows of random valid length
(the layout every peer supports); ``gae-holes`` also cuts a random span out of the middle of each row
(a tool-output span), which only peers with masked-skip semantics can handle.
"""
from __future__ import annotations

import torch

from rbr_fast import ops
from rbr_fast.ops.advantages import reference

from .harness import Case, Inputs, Peer, Size, Target, register
from .peers import CompiledPeer, OptionalPeer, chunked_scan_gae, trl_masked_whiten

SEED = 0
GAMMA, LAM, KL_COEF = 0.99, 0.95, 0.05
HEADLINE: Size = (256, 2048)
QUICK: list[Size] = [(16, 256), (64, 512)]
DEFAULT: Size = (64, 512)
ABOVE_L2: Size = (1024, 32768)  # 128 MiB per fp32 [B, T] tensor: above any GPU's L2 (50-60 MiB on H100/H200)


def _mask(size: Size, gen: torch.Generator, holes: bool) -> torch.Tensor:
    """Rows of random valid length in [1, T]; with ``holes``, a random span strictly inside each
    row's valid part is masked out too."""
    B, T = size
    pos = torch.arange(T)
    length = torch.randint(1, T + 1, (B, 1), generator=gen)
    mask = pos < length
    if holes:
        a, b = (torch.rand(2, B, 1, generator=gen) * length).long()
        hole = (pos >= torch.minimum(a, b)) & (pos < torch.maximum(a, b)) & (pos > 0) & (pos < length - 1)
        mask &= ~hole
    return mask


def _tokens(size: Size, device: torch.device, *names: str, holes: bool = False) -> Inputs:
    """Seeded inputs: a mask plus float32 [B, T] tensors; log-probs are negative, ref log-probs near
    them, scores [B], everything else standard normal."""
    gen = torch.Generator().manual_seed(SEED)
    mask = _mask(size, gen, holes)
    x: Inputs = {"mask": mask}
    for name in names:
        x[name] = torch.randn(size, generator=gen)
    if "logprobs" in x:
        x["logprobs"] = -3 * torch.rand(size, generator=gen) - 1e-3
        x["ref_logprobs"] = x["logprobs"] + 0.1 * torch.randn(size, generator=gen)
        x["scores"] = torch.randn(size[0], generator=gen)
    x = {k: t.to(device) for k, t in x.items()}
    return {**x, "gamma": GAMMA, "lam": LAM, "kl_coef": KL_COEF}


def _nbytes(x: Inputs, read: tuple[str, ...], written_tokens: int, written_rows: int = 0) -> int:
    """Bytes of the ``read`` inputs plus ``written_tokens`` float32 [B, T] and ``written_rows``
    float32 [B] outputs, each touched once."""
    B, T = x["mask"].shape
    return sum(x[k].numel() * x[k].element_size() for k in read) + 4 * (written_tokens * B * T + written_rows * B)


# -------------------------------------------------------------------------------------------------- gae

def _gae_inputs(holes: bool):
    return lambda size, device: _tokens(size, device, "rewards", "values", holes=holes)


def _ours_gae(x: Inputs):
    return ops.gae(x["rewards"], x["values"], x["mask"], x["gamma"], x["lam"])


def _out_buffers(x: Inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """Caller-owned (advantages, returns), made once per inputs: what a training loop passes each step."""
    if "out" not in x:
        like = x["values"]
        x["out"] = (torch.empty_like(like), torch.empty_like(like))
    return x["out"]


def _ours_gae_out(x: Inputs):
    return ops.gae(x["rewards"], x["values"], x["mask"], x["gamma"], x["lam"], out=_out_buffers(x))


# our op as the PPO loop calls it; with --no-tune-malloc the plain call pays page faults and this does not
_OUT_NOTE = "rbr_fast with out= buffers reused across calls (as the PPO loop calls it)"


def _loop_gae(x: Inputs):
    """The per-timestep backward loop (TRL/OpenRLHF/verl); it is the reference backend."""
    return reference.gae(x["rewards"], x["values"], x["mask"], x["gamma"], x["lam"])[:2]


def _chunked_gae(x: Inputs):
    """No mask support: zeroing padded rewards/values gives the masked result under right padding.
    The masking is part of the timed call."""
    m = x["mask"]
    return chunked_scan_gae(x["rewards"] * m, x["values"] * m, x["gamma"], x["lam"])


def _verl_gae(x: Inputs):
    from verl.trainer.ppo.core_algos import compute_gae_advantage_return
    m = x["mask"]
    return compute_gae_advantage_return(x["rewards"] * m, x["values"] * m, m.float(), x["gamma"], x["lam"])[1]


# verl whitens the advantages it returns, so only its returns (our output 1) are compared
_verl = OptionalPeer("verl.trainer.ppo.core_algos", _verl_gae, outputs=(1,),
                     note="compared on returns (verl also whitens its advantages)")


def _gae_bytes(x: Inputs) -> int:
    return _nbytes(x, ("rewards", "values", "mask"), written_tokens=2)


# torch.compile of the 2048-step loop unrolls it into a graph of ~16k nodes; on a 2-core CPU that
# took 24 s at T=32, 30 s at T=128 and 121 s at T=512, so it is only feasible for short rows and the
# compiled chunked scan (T/128 unrolled steps) stands in as the compiled peer at the headline size.
_compiled_loop = CompiledPeer(_loop_gae, note="compiled per-step loop")
_compiled_chunked = CompiledPeer(_chunked_gae, note="compiled chunked scan")

register(Case(
    name="gae", op="gae", build=_gae_inputs(holes=False), ours=_ours_gae, nbytes=_gae_bytes,
    peers={"rbr_fast(out=)": Peer(_ours_gae_out, note=_OUT_NOTE), "python-loop": Peer(_loop_gae), "verl": _verl,
           "chunked-scan": Peer(_chunked_gae), "torch.compile(python-loop)": _compiled_loop,
           "torch.compile(chunked-scan)": _compiled_chunked},
    sizes=[(64, 512), (1024, 1024), HEADLINE], quick_sizes=QUICK, default_size=DEFAULT, gpu_sizes=[ABOVE_L2]),
    Target("gae", HEADLINE, "python-loop", 100, "GAE 256x2048 fp32 vs python-loop"),
    Target("gae", HEADLINE, "chunked-scan", 5, "GAE 256x2048 fp32 vs chunked-scan"),
    Target("gae", HEADLINE, None, 0.5, "GAE 256x2048 fp32 floor time / our time"),
)

register(Case(
    name="gae-holes", op="gae", build=_gae_inputs(holes=True), ours=_ours_gae, nbytes=_gae_bytes,
    peers={"python-loop": Peer(_loop_gae), "torch.compile(python-loop)": _compiled_loop},
    sizes=[(64, 512), HEADLINE], quick_sizes=[(64, 512)], default_size=DEFAULT))


# --------------------------------------------------------------------------------------- ppo_advantages

def _ppo_inputs(size: Size, device: torch.device) -> Inputs:
    return _tokens(size, device, "values", "logprobs")


def _ours_ppo(whiten: bool, reuse_out: bool = False):
    def ours(x: Inputs):
        out = ops.ppo_advantages(x["scores"], x["logprobs"], x["ref_logprobs"], x["values"], x["mask"],
                                 kl_coef=x["kl_coef"], gamma=x["gamma"], lam=x["lam"], whiten=whiten,
                                 out=_out_buffers(x) if reuse_out else None)
        return out.advantages, out.returns
    return ours


def _unfused_ppo(whiten: bool):
    def unfused(x: Inputs):
        """Our separate ops in turn: the rewards (and advantages, when whitening) go through memory."""
        m = x["mask"]
        rewards = ops.shape_rewards(x["scores"], x["logprobs"], x["ref_logprobs"], m, x["kl_coef"])
        adv, ret = ops.gae(rewards, x["values"], m, x["gamma"], x["lam"])
        return (ops.masked_whiten(adv, m) if whiten else adv), ret
    return unfused


def _ppo_bytes(x: Inputs) -> int:
    return _nbytes(x, ("scores", "logprobs", "ref_logprobs", "values", "mask"), written_tokens=2, written_rows=1)


for _whiten, _name in ((False, "ppo_advantages"), (True, "ppo_advantages+whiten")):
    register(Case(
        name=_name, op="ppo_advantages", build=_ppo_inputs, ours=_ours_ppo(_whiten), nbytes=_ppo_bytes,
        peers={"rbr_fast(out=)": Peer(_ours_ppo(_whiten, reuse_out=True), note=_OUT_NOTE),
               "unfused": Peer(_unfused_ppo(_whiten), note="shape_rewards+gae" + ("+masked_whiten" if _whiten else ""))},
        sizes=[(64, 512), HEADLINE], quick_sizes=QUICK, default_size=DEFAULT, gpu_sizes=[ABOVE_L2]),
        *([] if _whiten else [Target(_name, HEADLINE, "unfused", 1.5, "ppo_advantages 256x2048 fused vs unfused")]))


# ------------------------------------------------------------------------------ masked_whiten, shape_rewards

register(Case(
    name="masked_whiten", op="masked_whiten",
    build=lambda size, device: _tokens(size, device, "x"),
    ours=lambda x: ops.masked_whiten(x["x"], x["mask"]),
    peers={"trl-style": Peer(lambda x: trl_masked_whiten(x["x"], x["mask"]))},
    nbytes=lambda x: _nbytes(x, ("x", "mask"), written_tokens=1),
    sizes=[(64, 512), HEADLINE], quick_sizes=QUICK, default_size=DEFAULT))

register(Case(
    name="shape_rewards", op="shape_rewards", build=_ppo_inputs,
    ours=lambda x: ops.shape_rewards(x["scores"], x["logprobs"], x["ref_logprobs"], x["mask"], x["kl_coef"]),
    peers={"torch-reference": Peer(lambda x: reference.shape_rewards(
        x["scores"], x["logprobs"], x["ref_logprobs"], x["mask"], x["kl_coef"], "k1")[0])},
    nbytes=lambda x: _nbytes(x, ("scores", "logprobs", "ref_logprobs", "mask"), written_tokens=1),
    sizes=[(64, 512), HEADLINE], quick_sizes=QUICK, default_size=DEFAULT))
