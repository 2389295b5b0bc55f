"""Benchmark cases for the grader. Sizes are (N completions, P propositions of the default spec);
the completions are a seeded sample of the RBR gold set. Importing this module registers the cases.

- ``grader``: shared-prefix packed grading (every question asked) against the naive way (one full
  prompt per (completion, proposition), right-padded batches under the same token budget,
  ``model(...).logits`` then ``log_softmax``), on the embedded SmolLM2-135M-Instruct in float32
  (both see the same ids, so they agree to summation order). Skipped when the model is missing.
- ``grader-tiny``: the same on a tiny random llama (the tests' model), a CI-sized check.
- ``grader-llama1b``: the same on a random bf16 llama of Llama-3.2-1B's body (16 layers, H=2048,
  32 heads, 8 KV heads) over the tiny vocabulary: grader throughput at a real model's cost, GPU only;
  ours uses FlexAttention (the CUDA default), a peer the dense tree mask through SDPA.
- ``grader-heads``: trained-head grading (the shipped heads: one pass over the transcript, stopped
  at the heads' layer) against the packed question layout, on
  SmolLM2 in float32. Different methods, so their answers are not compared (``same_output=False``);
  accuracy is ``rbr-fast eval-grader``'s. ``grader-heads-tiny``: the same path with random heads.

Floor: the tokens the layout encodes x 2 FLOPs x the matmul parameters of the layers it runs, at
the speed of one bare ``[2048, H] x [H, I]`` matmul in the model's dtype measured in the same run.
"""
from __future__ import annotations

import functools
import random
from typing import Optional

import torch

from rbr_fast import data
from rbr_fast.data.readers import read_jsonl
from rbr_fast.grading import Grader
from rbr_fast.grading.grader import default_attention
from rbr_fast.grading.heads import Head, PropositionHeads
from rbr_fast.grading.packing import buckets
from rbr_fast.grading.train import default_layer, recipe

from . import tiny_lm
from .harness import Case, Inputs, Options, Peer, Size, Skip, Target, measure, register


@functools.lru_cache(maxsize=None)
def _examples(n: int) -> tuple[list, list]:
    """``n`` (conversation, completion) pairs: a seeded sample of the gold set (repeated when short)."""
    rows = read_jsonl(data.gold())
    random.Random(0).shuffle(rows)
    rows = (rows * (n // len(rows) + 1))[:n]
    return [r.conversation for r in rows], [r.completion for r in rows]


@functools.lru_cache(maxsize=None)
def _grader(which: str, device: str, trained: bool = False) -> Grader:
    """Float32 on every CPU: the packed and naive layouts then agree to summation order, and the
    trained-head comparison is the issue's configuration (fp32)."""
    if which == "llama1b":
        if not device.startswith("cuda"):
            raise Skip("a random 1B-parameter model: run on a GPU")
        body = tiny_lm.model(dtype=torch.bfloat16, layers=16, hidden=2048, heads=32, kv_heads=8, intermediate=8192)
        body.set_attn_implementation(default_attention(torch.device(device)))
        return Grader(body.to(device), tiny_lm.tokenizer(), progress=False)
    if which == "tiny":
        g = Grader(tiny_lm.model().to(device), tiny_lm.tokenizer(), progress=False)
        if trained:
            g.heads = _random_heads(g)
        return g
    from rbr_fast.grading import embedded
    if trained and not embedded.HEADS.is_file():
        raise Skip(f"no shipped heads ({embedded.HEADS}); train them with `rbr-fast train-grader`")
    try:
        return Grader.default(device=device, dtype="float32", progress=False, trained=trained)
    except Exception as e:  # not installed, or cannot load here
        raise Skip(f"embedded model unavailable: {e}") from None


def _random_heads(g: Grader) -> PropositionHeads:
    """Heads of the default recipe's shape with random weights: the tiny model's timing check."""
    layer = default_layer(g.model.config.num_hidden_layers)
    rec = recipe([layer])
    gen = torch.Generator().manual_seed(0)
    heads = {}
    for name in g.spec.proposition_names + list(g.spec.prompt_propositions):
        c = (rec.request if name in g.spec.prompt_propositions else rec.reply)[0]
        d = len(c.inputs) * g.model.config.hidden_size
        heads[name] = Head(c.inputs, torch.zeros(d), torch.ones(d), torch.randn(d, generator=gen), torch.zeros(()))
    return PropositionHeads(heads, g.spec.fingerprint(), g.model_signature(), list(g.layout.head),
                            definitions=g.spec.definitions())


def _build(which: str, trained: bool = False):
    def build(size: Size, device: torch.device) -> Inputs:
        n, p = size
        grader = _grader(which, str(device), trained)
        names = grader.spec.proposition_names[:p]
        convs, comps = _examples(n)
        return {"grader": grader, "names": names, "convs": convs, "comps": comps,
                "questions": _grader(which, str(device)) if trained else grader}
    return build


def _ours(x: Inputs):
    out = x["grader"].grade(x["convs"], x["comps"], x["names"])
    return out.p_yes, out.mass


def _questions(x: Inputs):
    """The packed question layout (every proposition asked) on the same model and completions."""
    out = x["questions"].grade(x["convs"], x["comps"], x["names"])
    return out.p_yes, out.mass


def _prompts(x: Inputs) -> list[list[int]]:
    g = x["grader"]
    return [g.prompt_ids(c, r, n) for c, r in zip(x["convs"], x["comps"]) for n in x["names"]]


def _naive(x: Inputs):
    """One prompt per (completion, proposition); full logits, log_softmax, read the last position."""
    g = x["grader"]
    prompts = _prompts(x)
    device = next(g.model.parameters()).device
    p_yes = torch.empty(len(prompts))
    mass = torch.empty(len(prompts))
    with torch.inference_mode():
        for rows in buckets([len(p) for p in prompts], 0, g.token_budget):
            T = max(len(prompts[i]) for i in rows)
            ids = torch.full((len(rows), T), g.pad_id, dtype=torch.int64)
            mask = torch.zeros(len(rows), T, dtype=torch.int64)
            for k, i in enumerate(rows):
                ids[k, :len(prompts[i])] = torch.tensor(prompts[i])
                mask[k, :len(prompts[i])] = 1
            logp = torch.log_softmax(g.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float(), -1)
            last = logp[torch.arange(len(rows)), mask.sum(1).to(device) - 1]
            ly, ln = last[:, g.yes_ids].logsumexp(-1), last[:, g.no_ids].logsumexp(-1)
            p_yes[rows] = torch.sigmoid(ly - ln).cpu()
            mass[rows] = torch.exp(torch.logaddexp(ly, ln)).cpu()
    n = len(x["convs"])
    return p_yes.view(n, -1), mass.view(n, -1)


def _packed_sdpa(x: Inputs):
    """The packed layout with the tree mask as a dense [B, 1, T, T] tensor through SDPA (no flash
    path), on the same model: what FlexAttention's BlockMask replaces on CUDA."""
    model = x["grader"].model
    attn = model.config._attn_implementation
    model.set_attn_implementation("sdpa")
    try:
        return _ours(x)
    finally:
        model.set_attn_implementation(attn)


def _tokens(x: Inputs) -> tuple[float, float, float]:
    """Tokens encoded per completion: (packed layout, naive layout, the transcript alone)."""
    g, n, first = x["questions"], len(x["convs"]), x["names"][0]
    tails = sum(len(g.question_ids(name)) for name in x["names"])
    prefixes = sum(len(g.prompt_ids(c, r, first)) - len(g.question_ids(first)) for c, r in zip(x["convs"], x["comps"]))
    return (prefixes + n * tails) / n, sum(len(p) for p in _prompts(x)) / n, prefixes / n


def _describe_heads(x: Inputs) -> str:
    packed, _, alone = _tokens(x)
    g = x["grader"]
    asked = [n for n in x["names"] if g.answered_by[n] == "question"]
    return (f"{next(g.model.parameters()).dtype}; tokens encoded per completion: heads {alone:.0f} through "
            f"{max(g.heads.layers)} of {g.model.config.num_hidden_layers} layers" +
            (f" + {len(asked)} questions" if asked else "") + f", packed questions {packed:.0f} through all")


def _describe(x: Inputs) -> str:
    packed, naive, _ = _tokens(x)
    g = x["grader"]
    return (f"{next(g.model.parameters()).dtype}; tokens encoded per completion: packed {packed:.0f}, "
            f"naive {naive:.0f} ({naive / packed:.1f}x)")


def _floor(x: Inputs, opts: Options) -> float:
    g = x["grader"]
    model = g.model
    dtype = next(model.parameters()).dtype
    cfg = model.config
    params = sum(p.numel() for name, p in model.named_parameters() if p.dim() == 2 and "embed" not in name
                 and "lm_head" not in name)
    packed, _, alone = _tokens(x)
    if all(g.answered_by[n] != "question" for n in x["names"]):
        params, tokens = params * max(g.heads.layers) / cfg.num_hidden_layers, alone * len(x["convs"])
    else:
        tokens = packed * len(x["convs"])
    a = torch.randn(2048, cfg.hidden_size, device=opts.device).to(dtype)
    b = torch.randn(cfg.hidden_size, cfg.intermediate_size, device=opts.device).to(dtype)
    t = measure(lambda: a @ b, opts.device, 0.2, min_reps=3).median_s
    flops_per_s = 2 * a.shape[0] * a.shape[1] * b.shape[1] / t
    return 2 * params * tokens / flops_per_s


def _case(name: str, which: str, sizes: list[Size], quick: list[Size], default: Size, tol: float,
          gpu_sizes: list[Size] = (), peers: Optional[dict[str, Peer]] = None) -> Case:
    return Case(name, "grade", _build(which), _ours, {"naive prompt-per-question": Peer(_naive), **(peers or {})},
                nbytes=lambda x: 0, sizes=sizes, quick_sizes=quick, default_size=default, tol=tol,
                floor_s=_floor, size_label="completions", warmup=0, describe=_describe, gpu_sizes=list(gpu_sizes))


def _heads_case(name: str, which: str, sizes: list[Size], quick: list[Size], default: Size) -> Case:
    peer = Peer(_questions, same_output=False, note="asks every question: another method, answers not compared")
    return Case(name, "grade", _build(which, trained=True), _ours, {"packed question layout": peer},
                nbytes=lambda x: 0, sizes=sizes, quick_sizes=quick, default_size=default, floor_s=_floor,
                size_label="completions", warmup=0, describe=_describe_heads)


# float32: packed and naive see identical ids, so they differ only by summation order
register(_case("grader", "smollm2", [(8, 23)], [(2, 23)], (2, 23), tol=1e-3),
         Target("grader", (8, 23), "naive prompt-per-question", 8.0,
                "shared-prefix grading >= 8x the naive throughput (SmolLM2, default spec)"))
register(_case("grader-tiny", "tiny", [(16, 23)], [(4, 23)], (4, 23), tol=1e-4))
# bf16: packed and naive batches differ in padding and so in rounding
register(_case("grader-llama1b", "llama1b", [], [], (64, 23), tol=3e-2, gpu_sizes=[(64, 23)],
               peers={"packed, SDPA dense mask": Peer(_packed_sdpa)}))
register(_heads_case("grader-heads", "smollm2", [(16, 23)], [(4, 23)], (4, 23)),
         Target("grader-heads", (16, 23), "packed question layout", 3.0,
                "trained-head grading >= 3x the packed question layout (SmolLM2 fp32, default spec)"))
register(_heads_case("grader-heads-tiny", "tiny", [(16, 23)], [(4, 23)], (4, 23)))
