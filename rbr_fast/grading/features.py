"""Hidden-state features of a completion, the inputs of trained proposition heads.

One forward pass over the grader's head + transcript (no question); the outputs of chosen decoder
layers are pooled over the transcript's pieces (``POOLINGS``): the mean and the last token of the
reply and of the conversation before it, the element-wise max over the reply (a phrase anywhere in
a long reply, which a mean dilutes) and the mean of the reply's first ``OPENING`` tokens (how it
opens: "I cannot ... However, here is ..." is a partial refusal, however helpful the rest).

For a conversation alone (no reply: what the request heads read, ``Grader.grade_prompts``) the
reply poolings cover its last turn, the request itself: in a long conversation the conversation's
mean dilutes the request that decides the response type (measured: refuse-vs-comply on held-out
gold prompts 0.72 from the conversation's mean and last token, 0.78 from the last turn's poolings).

Layers are numbered 1..L (the output of decoder layer ``l - 1``); capturing stops the forward pass
after the deepest layer needed unless the caller also needs the final hidden state (the question
path shares the pass).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch

POOLINGS = ("reply_mean", "reply_last", "conv_mean", "conv_last", "reply_max", "reply_open")
OPENING = 16


class _Stop(Exception):
    """Raised by the last capture hook: the layers after it are not needed."""


def decoder_layers(model) -> torch.nn.ModuleList:
    """The decoder blocks of a transformers causal LM (``model.model.layers`` for llama-like models;
    found as the ModuleList with ``num_hidden_layers`` entries otherwise)."""
    n = model.config.num_hidden_layers
    base = getattr(model, "base_model", model)
    layers = getattr(base, "layers", None)
    if isinstance(layers, torch.nn.ModuleList) and len(layers) == n:
        return layers
    for m in base.modules():
        if isinstance(m, torch.nn.ModuleList) and len(m) == n:
            return m
    raise NotImplementedError(f"cannot find the {n} decoder layers of {type(model).__name__}")


@contextmanager
def capture(model, layers: Sequence[int], stop: bool) -> Iterator[dict[int, torch.Tensor]]:
    """Hooks that keep the output of each decoder layer in ``layers`` (1-based) while the block
    runs; with ``stop`` the pass ends after the deepest one (run it inside ``run_until``)."""
    blocks = decoder_layers(model)
    bad = [l for l in layers if not 1 <= l <= len(blocks)]
    if bad:
        raise ValueError(f"layers {bad} outside 1..{len(blocks)} of this model")
    out: dict[int, torch.Tensor] = {}
    last = max(layers, default=0)

    def hook(layer):
        def fn(_module, _inputs, output):
            out[layer] = output[0] if isinstance(output, tuple) else output
            if stop and layer == last:
                raise _Stop
        return fn
    handles = [blocks[l - 1].register_forward_hook(hook(l)) for l in sorted(set(layers))]
    try:
        yield out
    finally:
        for h in handles:
            h.remove()


def run_until(fn) -> None:
    """Call ``fn()``; a capture hook with ``stop`` ends it early."""
    try:
        fn()
    except _Stop:
        pass


def pool(hidden: torch.Tensor, conversation: Sequence[tuple[int, int]], reply: Sequence[tuple[int, int]]) -> torch.Tensor:
    """``[B, len(POOLINGS), H]`` float32 poolings of ``hidden`` ``[B, T, H]`` over each row's half-open
    token ranges. An empty range (a piece cut away, or no reply) pools the token just before it,
    the last thing the model read."""
    B, T, H = hidden.shape
    w = torch.zeros(B, 5, T, dtype=torch.float32)  # the poolings that are weighted sums of token states
    peak = torch.empty(B, H, dtype=torch.float32, device=hidden.device)
    for b, ((c0, c1), (r0, r1)) in enumerate(zip(conversation, reply)):
        for k, (s, e) in ((0, (r0, r1)), (2, (c0, c1))):
            if e <= s:
                s, e = max(s - 1, 0), max(s, 1)
            w[b, k, s:e] = 1.0 / (e - s)
            w[b, k + 1, e - 1] = 1.0
            if k == 0:
                peak[b] = hidden[b, s:e].float().amax(0)
                w[b, 4, s:min(e, s + OPENING)] = 1.0 / (min(e, s + OPENING) - s)
    sums = torch.einsum("bkt,bth->bkh", w.to(hidden.device), hidden.float())
    return torch.cat([sums[:, :4], peak[:, None], sums[:, 4:]], 1)


def pooled_features(model, ids: torch.Tensor, mask: torch.Tensor, conversation: Sequence[tuple[int, int]],
                    reply: Sequence[tuple[int, int]], layers: Sequence[int]) -> torch.Tensor:
    """``[B, len(layers), len(POOLINGS), H]`` pooled states of one right-padded batch (``ids``,
    ``mask`` ``[B, T]``), the pass stopped after the deepest layer needed."""
    device = next(model.parameters()).device
    with capture(model, layers, stop=True) as states:
        run_until(lambda: model.base_model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False))
    return torch.stack([pool(states[l], conversation, reply) for l in layers], 1).cpu()
