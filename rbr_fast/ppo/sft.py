"""The experiment's starting policy: a short supervised fine-tune (SFT) of a causal LM on ideal
completions of the SFT prompts only, as RL starts from an SFT policy in Mu et al. 2024.

Targets come from XSTest's human-labelled completions: a safe prompt gets a full compliance, an
unsafe one a full refusal, each cut to its first sentences (PPO and evaluation generate tens of
tokens). ``refuse_share`` keeps that share of the unsafe prompts' refusals (the rest are left out,
never replaced by harmful compliance): a start that refuses sometimes but not reliably, so that PPO
has refusals to reinforce and room to improve. The result is cached by its settings and written
atomically (a folder renamed into place), so a killed run starts the SFT over and a finished one is
reused.
"""
from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch

from ..data.prompts import Prompt
from ..data.readers import COMPLY, REFUSE, load_xstest
from .models import load_causal_lm, maybe_autocast
from .rollout import IGNORE, messages

# the models whose completions are targets, in order of preference (GPT-4's are the shortest and cleanest)
TARGET_MODELS = ("gpt4", "mistralinstruct", "llama2orig")


@dataclass(frozen=True)
class SFTConfig:
    """One SFT run; its fields (and the policy's name) key the cache."""
    policy: str = "embedded"
    refuse_share: float = 0.5  # share of unsafe SFT prompts that get their refusal target
    epochs: int = 2
    lr: float = 2e-5
    batch_size: int = 8
    max_target_chars: int = 240  # targets are cut at a sentence end before this many characters
    seed: int = 0
    bf16: bool = True

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def first_sentences(text: str, max_chars: int) -> str:
    """The longest run of whole sentences of ``text`` within ``max_chars`` (at least the first one, cut)."""
    text = " ".join(text.split())
    ends = [m.end() for m in re.finditer(r"(?<![0-9])[.!?](?=\s|$)", text)]  # "1." starts a list item
    fit = [e for e in ends if e <= max_chars]
    return text[:fit[-1]] if fit else text[:max_chars].rstrip()


def sft_targets(prompts: Sequence[Prompt], cfg: SFTConfig) -> list[tuple[str, str]]:
    """(prompt, target) pairs for XSTest ``prompts``: the first full compliance (safe) or full refusal
    (unsafe) among ``TARGET_MODELS``; ``cfg.refuse_share`` of the unsafe prompts (a seeded sample)."""
    want = {p.xstest_id: p for p in prompts if p.xstest_id is not None}
    best: dict[str, str] = {}
    for it in sorted(load_xstest(), key=lambda it: TARGET_MODELS.index(it.model)):
        p = want.get(it.prompt_id)
        if p is None or it.prompt_id in best:
            continue
        if it.human == (COMPLY if p.label == "safe" else REFUSE):
            best[it.prompt_id] = first_sentences(it.completion, cfg.max_target_chars)
    unsafe = sorted(k for k in best if want[k].label == "unsafe")
    keep_unsafe = set(random.Random(cfg.seed).sample(unsafe, round(cfg.refuse_share * len(unsafe))))
    return [(want[k].prompt, best[k]) for k in sorted(best) if want[k].label == "safe" or k in keep_unsafe]


def _encode(tok, prompt, target: str) -> tuple[list[int], list[int]]:
    """Token ids of the chat-templated prompt + target + EOS, and labels (IGNORE on the prompt)."""
    head = tok.apply_chat_template(messages(prompt), add_generation_prompt=True, tokenize=True)
    head = list(head["input_ids"] if hasattr(head, "keys") else head)
    body = tok(target, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return head + body, [IGNORE] * len(head) + body


def finetune(model, tok, pairs: Sequence[tuple[str, str]], cfg: SFTConfig, progress: bool = True) -> list[float]:
    """Fine-tune ``model`` in place on ``pairs`` (loss on the target tokens only); the mean loss per epoch."""
    rows = [_encode(tok, p, t) for p, t in pairs]
    g = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, fused=True)
    device = next(model.parameters()).device
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    model.train()
    steps = cfg.epochs * -(-len(rows) // cfg.batch_size)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=steps, desc="sft", unit="step")
    losses = []
    for _ in range(cfg.epochs):
        perm = torch.randperm(len(rows), generator=g).tolist()
        total = 0.0
        for s in range(0, len(rows), cfg.batch_size):
            batch = [rows[i] for i in perm[s:s + cfg.batch_size]]
            width = max(len(ids) for ids, _ in batch)  # right padding: positions need no shifting
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
            attn = torch.zeros((len(batch), width), dtype=torch.long)
            for i, (x, y) in enumerate(batch):
                ids[i, :len(x)], labels[i, :len(y)], attn[i, :len(x)] = torch.tensor(x), torch.tensor(y), 1
            with maybe_autocast(device, cfg.bf16):
                loss = model(input_ids=ids.to(device), attention_mask=attn.to(device), labels=labels.to(device)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            step_loss = float(loss.detach())
            total += step_loss * len(batch)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{step_loss:.3f}")
        losses.append(total / len(rows))
    if bar is not None:
        bar.close()
    model.eval()
    return losses


def sft_policy(prompts: Sequence[Prompt], cfg: SFTConfig, cache: Path, device: torch.device,
               progress: bool = True) -> Path:
    """The folder of the SFT policy for ``cfg`` under ``cache`` (``save_pretrained`` layout plus
    ``sft.json``: settings, examples, losses), trained now unless already there."""
    folder = Path(cache) / f"sft-{cfg.key()}"
    if (folder / "sft.json").is_file():
        return folder
    pairs = sft_targets(prompts, cfg)
    model, tok = load_causal_lm(cfg.policy, device)
    losses = finetune(model, tok, pairs, cfg, progress)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    safe = {p.prompt for p in prompts if p.label == "safe"}
    (tmp / "sft.json").write_text(json.dumps({"config": asdict(cfg), "examples": len(pairs),
                                              "refusal_examples": sum(p not in safe for p, _ in pairs),
                                              "epoch_losses": losses}, indent=1))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder
