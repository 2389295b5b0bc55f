"""Policy + value network, and the response log-probs of any causal LM through the fused kernel.

Sequences are ``[left-padded prompt | response]``: the prompt block has a common length ``start``,
so the hidden states that predict the response tokens are ``hidden[:, start - 1 : -1]``. Only those
go through the LM head, by ``fused_linear_token_logprobs`` (one chunk of logits at a time, never
``[B, T, V]``); the prompt positions never reach the head at all.
"""
from __future__ import annotations

import copy
from typing import NamedTuple, Optional

import torch
from torch import nn

from ..ops import fused_linear_token_logprobs


def backbone(model: nn.Module) -> nn.Module:
    """The transformer under a ``*ForCausalLM`` / ``*ForSequenceClassification`` head."""
    return getattr(model, model.base_model_prefix)


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding, as ``generate`` assigns them (so scores match sampling)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def response_hidden(body: nn.Module, ids: torch.Tensor, attn: torch.Tensor, start: int) -> torch.Tensor:
    """``[B, R, H]`` last hidden states at the positions that predict the R response tokens."""
    out = body(input_ids=ids, attention_mask=attn, position_ids=position_ids(attn), use_cache=False)
    return out.last_hidden_state[:, start - 1:-1]


def head_logprobs(model: nn.Module, hidden: torch.Tensor, labels: torch.Tensor, temperature: float):
    """(log-probs, entropy) ``[B, R]`` float32 of ``labels`` (-100 = ignored) under the LM head."""
    head = model.get_output_embeddings()
    return fused_linear_token_logprobs(hidden, head.weight.to(hidden.dtype), labels,
                                       bias=None if head.bias is None else head.bias.to(hidden.dtype),
                                       temperature=temperature, return_entropy=True)


@torch.no_grad()
def reference_logprobs(model: nn.Module, ids, attn, start: int, labels, temperature: float) -> torch.Tensor:
    """Response log-probs of a frozen model (the reference)."""
    return head_logprobs(model, response_hidden(backbone(model), ids, attn, start), labels, temperature)[0]


class Scored(NamedTuple):
    logprobs: torch.Tensor  # [B, R] float32
    entropy: torch.Tensor  # [B, R] float32
    values: torch.Tensor  # [B, R] float32


class ActorCritic(nn.Module):
    """The trained policy with a scalar value head. ``critic="head"``: values from the policy's own
    hidden states (one backbone pass gives log-probs and values); ``"separate"``: a value network with
    its own copy of the backbone (as TRL's PPO), twice the compute and optimizer memory."""

    def __init__(self, policy: nn.Module, critic: str = "head"):
        super().__init__()
        self.policy = policy
        self.critic_body = copy.deepcopy(backbone(policy)) if critic == "separate" else None
        self.value_head = nn.Linear(policy.config.hidden_size, 1)
        with torch.no_grad():  # values start near 0: early GAE is not thrown around by a random head
            self.value_head.weight.normal_(0, 1e-3)
            self.value_head.bias.zero_()

    def forward(self, ids: torch.Tensor, attn: torch.Tensor, start: int, labels: torch.Tensor,
                temperature: float, hidden: Optional[torch.Tensor] = None) -> Scored:
        """Scores of the response tokens; ``hidden`` (the policy's response hidden states, e.g. kept
        from sampling) skips the policy's forward pass."""
        h = response_hidden(backbone(self.policy), ids, attn, start) if hidden is None else hidden
        logprobs, entropy = head_logprobs(self.policy, h, labels, temperature)
        hv = h if self.critic_body is None else response_hidden(self.critic_body, ids, attn, start)
        values = self.value_head(hv.to(self.value_head.weight.dtype)).squeeze(-1).float()
        return Scored(logprobs, entropy, values)


def no_dropout(model: nn.Module) -> nn.Module:
    """PPO ratios must be 1 on the first minibatch: switch every dropout off, train mode or not."""
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    for key in ("attention_dropout", "hidden_dropout", "resid_pdrop", "attn_pdrop", "embd_pdrop", "dropout"):
        if isinstance(getattr(model.config, key, None), float):
            setattr(model.config, key, 0.0)
    return model


def load_causal_lm(name: str, device: torch.device, dtype: torch.dtype = torch.float32):
    """(model, tokenizer) from a folder / hub id, or the embedded SmolLM2 for ``"embedded"``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    path = _resolve(name)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="sdpa")
    return model.to(device), tok


def load_reward_model(name: str, device: torch.device, dtype: torch.dtype = torch.float32):
    from transformers import AutoModelForSequenceClassification
    model = AutoModelForSequenceClassification.from_pretrained(_resolve(name), num_labels=1, dtype=dtype)
    return model.to(device).eval().requires_grad_(False)


def _resolve(name: str):
    if name == "embedded":
        from ..grading import embedded
        return embedded.path()
    return name


@torch.no_grad()
def reward_model_scores(model: nn.Module, ids: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
    """``[B]`` scores of a sequence classifier at each row's last real token (its own pooling looks for
    the first pad token, which is wrong for left-padded prompts and for a pad that is also EOS)."""
    h = backbone(model)(input_ids=ids, attention_mask=attn, position_ids=position_ids(attn)).last_hidden_state
    last = attn.shape[1] - 1 - attn.flip(-1).long().argmax(-1)
    head = getattr(model, "score", None) or getattr(model, "classifier")
    return head(h[torch.arange(ids.shape[0]), last])[:, 0].float()


def maybe_autocast(device: torch.device, enabled: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def bf16_enabled(setting: str, device: torch.device) -> bool:
    """``"on"``/``"off"``, or for ``"auto"`` the grader's choice of dtype (bf16 on CUDA and AMX CPUs)."""
    if setting != "auto":
        return setting == "on"
    from ..grading.grader import resolve_dtype
    return resolve_dtype("auto", device) == torch.bfloat16

