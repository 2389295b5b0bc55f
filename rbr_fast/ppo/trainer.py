"""The PPO loop. One step = rollout (generate) -> score (grader + RM) -> log-probs and values
(policy, reference) -> ``ppo_advantages`` (KL shaping + GAE + whitening, one fused op) -> update
(clipped policy and value losses, several epochs of minibatches). With ``group_size > 1`` each
prompt gets several completions and the critic gives way to a leave-one-out group baseline (RLOO).

Losses are token means over each minibatch *across processes*: each process divides its token sum
by the global token count and DDP's gradient average is undone by the world size, so N processes
give the gradient one process computes on the union of their rows.
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from pathlib import Path
from typing import Callable, Optional

import torch
from torch.nn.parallel import DistributedDataParallel

from ..data.prompts import Prompt, PromptOrder, load_prompts
from ..errors import UserError
from ..evaluation.policy import HeldOutTally
from ..io import atomic_write_text, check_model_location, check_output_dir, dumps
from ..ops import ppo_advantages
from ..reward import load_grader, resolve_spec, resolve_weights
from ..rules import RuleSpec
from . import checkpoint, distributed
from .config import PPOConfig
from .models import (ActorCritic, bf16_enabled, load_causal_lm, maybe_autocast, no_dropout, reference_logprobs)
from .rollout import Rollout, decode, generate
from .runlog import RunLog
from .scoring import SequenceScore

PHASES = ("generate", "grade", "logprobs", "advantages", "update")


# per-token means logged for each update: policy loss, value loss, share of clipped ratios, KL estimate
LOSS_STATS = ("pg_loss", "vf_loss", "clip_frac", "approx_kl")

class PhaseTimer:
    """Seconds spent per named phase: ``with timer("generate"): ...`` adds to ``timer.t["generate"]``."""

    def __init__(self):
        self.t: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        yield
        self.t[name] = self.t.get(name, 0.0) + time.perf_counter() - t0


class PPOTrainer:
    """A PPO run of ``cfg``. ``policy``/``tokenizer``/``grader`` may be given ready (tests, embedding);
    otherwise they are loaded from the config. ``reward_fn(prompts, completions) -> floats`` is any
    callable helpful-only reward, added to the RBR reward with weight ``cfg.rm_coef``.

    ``train()`` runs to ``cfg.steps`` (resuming from the latest checkpoint when ``resume``) and returns
    the summary (evaluation before and after, time split)."""

    def __init__(self, cfg: PPOConfig, *, policy=None, tokenizer=None, grader=None, reward_fn=None):
        self.cfg = cfg
        if not cfg.rbr and cfg.reward_model is None and reward_fn is None:
            raise UserError("ppo config: rbr=False and no reward_model (nor reward_fn): there is no reward at all")
        if policy is not None and tokenizer is None:
            raise ValueError("a given policy needs its tokenizer")
        want = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        if want == "cuda" and not torch.cuda.is_available():
            raise UserError("ppo config: device='cuda' but torch sees no CUDA device")
        self.rank, self.world = distributed.init(want)
        # everything the user gave is checked before a folder is made or a model loaded
        self.train_prompts, self.eval_prompts = load_prompts(cfg.prompts, cfg.eval_prompts, cfg.seed)
        self.order = PromptOrder(self.train_prompts, cfg.batch_size, self.rank, self.world, cfg.seed)
        models = {"policy": policy is None and cfg.policy, "grader": cfg.rbr and grader is None and cfg.grader,
                  "reward_model": cfg.reward_model}
        for what, name in models.items():
            if name and name != "embedded":
                check_model_location(name, f"ppo config: {what}")
        spec = grader.spec if grader is not None else resolve_spec(cfg.spec)
        weights = None
        if cfg.rbr:
            weights = resolve_weights(cfg.rbr_weights, spec)
            _check_types(self.train_prompts + self.eval_prompts, spec, cfg.prompts)
        check_output_dir(cfg.out_dir, "ppo config: out_dir")

        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = torch.device(want, self.rank % torch.cuda.device_count()) if want == "cuda" else torch.device(want)
        self.bf16 = bf16_enabled(cfg.bf16, self.device)
        torch.manual_seed(cfg.seed)
        self.out = Path(cfg.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)

        if policy is None:
            policy, tokenizer = load_causal_lm(cfg.policy, self.device)
        self.tok = tokenizer
        if self.tok.pad_token_id is None:
            self.tok.pad_token = self.tok.eos_token
        policy = no_dropout(policy.to(self.device))
        # the reference is the starting policy, frozen; the RBR grader shares it when it is the same model
        if cfg.rbr and grader is None:
            from ..grading import Grader, embedded
            # the embedded model grades with the shipped heads (each answers its own definition)
            heads = embedded.default_heads() if cfg.grader == "embedded" else None
            grader = (Grader(copy.deepcopy(policy).eval(), tokenizer, spec, heads=heads, served=cfg.grader_url)
                      if cfg.grader == cfg.policy else
                      load_grader(spec, cfg.grader, device=self.device, grader_url=cfg.grader_url))
        if cfg.rbr and cfg.grader == cfg.policy:
            self.ref = grader.model
        else:
            self.ref = copy.deepcopy(policy)
        self.ref.eval().requires_grad_(False)
        self.score = SequenceScore(cfg, grader, weights, self.device, reward_fn)

        self.net = ActorCritic(policy, cfg.critic).to(self.device)
        if cfg.gradient_checkpointing:
            for m in (policy, self.net.critic_body):
                if m is not None:
                    _checkpoint_activations(m)
        self.net.train()
        self.model = (DistributedDataParallel(self.net, device_ids=[self.device.index] if self.device.type == "cuda"
                                              else None) if self.world > 1 else self.net)
        # fused: one pass over parameters, gradients and moments instead of ~10 (a third of the update
        # time on CPU at 135M parameters, where the step is memory-bound)
        self.opt = torch.optim.AdamW([p for p in self.net.parameters() if p.requires_grad], lr=cfg.lr,
                                     weight_decay=cfg.weight_decay, fused=True)
        self.step = 0
        self._adv_buffer: Optional[torch.Tensor] = None
        # different sampling per process, same everything else
        torch.manual_seed(cfg.seed * 1000 + 1 + self.rank)

    # ------------------------------------------------------------------------------------ rollout
    def _forward(self, ro: Rollout, rows):
        """Policy log-probs, entropy and values of rollout rows, trimmed to their own padding."""
        ids, attn, labels = ro.ids[rows], ro.attn[rows], ro.labels[rows]
        lead = int((attn[:, :ro.start].sum(0) == 0).sum())  # prompt columns that are padding in every row
        length = int((labels != -100).sum(1).max())
        ids, attn, labels = ids[:, lead:ro.start + length], attn[:, lead:ro.start + length], labels[:, :length]
        start = ro.start - lead
        with maybe_autocast(self.device, self.bf16):
            return self.model(ids, attn, start, labels, self.cfg.temperature), labels != -100

    def _advantage_out(self, shape: torch.Size, dtype: torch.dtype, device: torch.device):
        """(advantages, returns) outputs for ``ppo_advantages``: views of one buffer kept across
        rollouts, grown when a batch is longer, so that no step allocates (on CPU: page-faults in)
        fresh [B, T] outputs."""
        n = shape.numel()
        buf = self._adv_buffer
        if buf is None or buf.numel() < 2 * n or buf.dtype != dtype or buf.device != device:
            buf = self._adv_buffer = torch.empty(2 * n, dtype=dtype, device=device)
        return buf[:n].view(shape), buf[n:2 * n].view(shape)

    def rollout(self, prompts: list[Prompt], timer: Optional[PhaseTimer] = None) -> dict:
        """Sample, score and take log-probs, values and advantages of one batch of ``prompts``
        (``timer``: where the seconds went, by phase). The returned advantages and returns live in
        a buffer the next rollout overwrites: clone them to keep them longer."""
        cfg = self.cfg
        timer = timer or PhaseTimer()
        prompts = [p for p in prompts for _ in range(cfg.group_size)]  # a prompt's completions are adjacent
        with timer("generate"):
            ro = generate(self.net.policy, self.tok, [p.prompt for p in prompts], max_prompt_tokens=cfg.max_prompt_tokens,
                          max_new_tokens=cfg.max_new_tokens, min_new_tokens=cfg.min_new_tokens,
                          temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k)
            texts = decode(self.tok, ro)
        with timer("grade"):
            scores, metrics = self.score(prompts, texts, ro)
        with timer("logprobs"), torch.no_grad(), maybe_autocast(self.device, self.bf16):
            out = self.net(ro.ids, ro.attn, ro.start, ro.labels, cfg.temperature, hidden=ro.hidden)
            ref = reference_logprobs(self.ref, ro.ids, ro.attn, ro.start, ro.labels, cfg.temperature)
        with timer("advantages"):
            local_whiten = cfg.whiten_advantages and self.world == 1
            values, gamma, lam = out.values, cfg.gamma, cfg.lam
            if cfg.group_size > 1:  # RLOO: the baseline is in the score, the critic is not used
                values, gamma, lam = torch.zeros_like(out.values), 1.0, 1.0
            adv = ppo_advantages(leave_one_out(scores, cfg.group_size), out.logprobs, ref, values, ro.mask,
                                 kl_coef=cfg.kl_coef, kl_estimator=cfg.kl_estimator, gamma=gamma, lam=lam,
                                 whiten=local_whiten,
                                 out=self._advantage_out(ro.mask.shape, torch.promote_types(
                                     torch.promote_types(out.logprobs.dtype, ref.dtype), out.values.dtype), ro.mask.device))
            advantages = adv.advantages
            if cfg.whiten_advantages and self.world > 1:
                advantages = self._whiten_global(advantages, ro.mask)
        # the scorer's means (RBR, RM, per proposition) are per process: average them
        means = distributed.all_sum(torch.tensor(list(metrics.values()), dtype=torch.float64)) / self.world
        metrics = dict(zip(metrics, means.tolist()))
        m = ro.mask.float()
        all_scores = distributed.all_cat(scores.float())
        ret_var = _var(adv.returns, m)
        metrics.update({
            "reward_mean": float(all_scores.mean()), "reward_std": float(all_scores.std()) if len(all_scores) > 1 else 0.0,
            "kl": float(distributed.all_cat(adv.kl).mean()), "entropy": _mean(out.entropy, m),
            "response_len": _mean(m.sum(1), torch.ones_like(m[:, 0])), "ended": _mean(ro.ended.float(), torch.ones_like(m[:, 0])),
            "value_explained_var": 1 - _var(adv.returns - out.values, m) / ret_var if ret_var > 0 else float("nan"),
        })
        return {"rollout": ro, "texts": texts, "old_logprobs": out.logprobs, "old_values": out.values,
                "advantages": advantages, "returns": adv.returns, "metrics": metrics}

    def _whiten_global(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mean, var = _moments(x, mask.double())
        return ((x - mean) * (var + 1e-8) ** -0.5).float() * mask

    # ------------------------------------------------------------------------------------- update
    def minibatch_loss(self, batch: dict, rows: torch.Tensor, n_tokens: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss of ``rows`` as its share of a token mean over ``n_tokens`` (all processes' minibatch), and
        the token sums of (policy loss, value loss, clipped, approx KL) for logging."""
        cfg = self.cfg
        out, m = self._forward(batch["rollout"], rows)
        L = m.shape[1]
        old_lp, old_v = batch["old_logprobs"][rows, :L], batch["old_values"][rows, :L]
        adv, ret = batch["advantages"][rows, :L], batch["returns"][rows, :L]
        m = m.float()
        log_ratio = out.logprobs - old_lp
        ratio = torch.exp(log_ratio)
        pg = torch.max(-adv * ratio, -adv * ratio.clamp(1 - cfg.clip_range, 1 + cfg.clip_range))
        v_clip = old_v + (out.values - old_v).clamp(-cfg.value_clip, cfg.value_clip)
        vf = 0.5 * torch.max((out.values - ret) ** 2, (v_clip - ret) ** 2)
        tok = pg + cfg.vf_coef * vf if cfg.group_size == 1 else pg
        if cfg.ent_coef > 0:  # only then does the entropy's backward run
            tok = tok - cfg.ent_coef * out.entropy
        loss = (tok * m).sum() / n_tokens * self.world
        with torch.no_grad():  # token sums, in the order of LOSS_STATS
            stats = torch.stack([(x * m).sum().double() for x in (
                pg, vf, ((ratio - 1).abs() > cfg.clip_range).float(), 0.5 * log_ratio ** 2)])
        return loss, stats

    def update(self, batch: dict, timer: Optional[PhaseTimer] = None) -> dict:
        """``ppo_epochs`` passes of minibatch updates over a ``rollout`` batch; the mean loss stats."""
        cfg = self.cfg
        timer = timer or PhaseTimer()
        mask = batch["rollout"].mask
        B, micro = cfg.batch_size * cfg.group_size, cfg.mini_batch_size // cfg.grad_accum_steps
        stats = torch.zeros(len(LOSS_STATS), dtype=torch.float64)
        tokens = 0.0
        grad_norms = []
        with timer("update"):
            for epoch in range(cfg.ppo_epochs):
                g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.step * 101 + epoch)
                perm = torch.randperm(B, generator=g)
                for s in range(0, B, cfg.mini_batch_size):
                    idx = perm[s:s + cfg.mini_batch_size].to(mask.device)
                    n = float(distributed.all_sum(mask[idx].sum().double()))
                    for k in range(cfg.grad_accum_steps):
                        rows = idx[k * micro:(k + 1) * micro]
                        last = k == cfg.grad_accum_steps - 1
                        sync = self.model.no_sync() if self.world > 1 and not last else contextlib.nullcontext()
                        with sync:
                            loss, st = self.minibatch_loss(batch, rows, n)
                            loss.backward()
                        stats += st.cpu()
                    tokens += n
                    if cfg.max_grad_norm > 0:
                        grad_norms.append(float(torch.nn.utils.clip_grad_norm_(self.net.parameters(), cfg.max_grad_norm)))
                    self.opt.step()
                    self.opt.zero_grad(set_to_none=True)
        stats = distributed.all_sum(stats) / tokens
        return {**dict(zip(LOSS_STATS, stats.tolist())),
                **({"grad_norm": sum(grad_norms) / len(grad_norms)} if grad_norms else {})}

    # --------------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, prompts: list[Prompt]) -> dict:
        """Greedy responses to held-out prompts (this process's share): mean score, mean RBR reward,
        and with XSTest labels the keyword-judged Not-Unsafe / Not-Overrefuse rates."""
        mine = prompts[self.rank::self.world]
        tally = HeldOutTally()
        for s in range(0, len(mine), self.cfg.batch_size):
            ps = mine[s:s + self.cfg.batch_size]
            ro = generate(self.net.policy, self.tok, [p.prompt for p in ps], max_prompt_tokens=self.cfg.max_prompt_tokens,
                          max_new_tokens=self.cfg.max_new_tokens, do_sample=False)
            texts = decode(self.tok, ro)
            score, metrics = self.score(ps, texts, ro)
            tally.add([p.label for p in ps], texts, score, metrics.get("rbr", 0.0))
        return HeldOutTally.from_tensor(distributed.all_sum(tally.to_tensor())).summary(self.cfg.rbr)

    # ----------------------------------------------------------------------------------- the loop
    def _state(self) -> dict:
        return {"step": self.step, "model": self.net.state_dict(), "optimizer": self.opt.state_dict(),
                "config": self.cfg.to_dict()}

    def resume(self) -> bool:
        """Load the latest checkpoint of ``out_dir`` (False when there is none)."""
        folder = checkpoint.latest(self.out / "checkpoints")
        if folder is None:
            return False
        state = checkpoint.load(folder, self.rank, self.device)
        checkpoint.check_config(folder, state["config"], self.cfg.to_dict())
        self.net.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.step = state["step"]
        return True

    def save(self) -> Path:
        return checkpoint.save(self.out / "checkpoints", self.step, self._state() if self.rank == 0 else {},
                               self.rank, self.cfg.keep_checkpoints)

    def train(self, resume: bool = False, on_step: Optional[Callable[["PPOTrainer"], None]] = None) -> dict:
        """Run to ``cfg.steps``; ``on_step(self)`` is called after each step (and its checkpoint)."""
        cfg = self.cfg
        resumed = self.resume() if resume else False
        log = RunLog(self.out, self.rank == 0, cfg.tensorboard, self.step if resumed else None)
        summary_path = self.out / "summary.json"
        summary = json.loads(summary_path.read_text()) if resumed and summary_path.is_file() else {}
        if self.step < cfg.steps:
            summary.pop("after", None)  # a finished run continued to more steps is evaluated again
        if cfg.eval_prompts and "before" not in summary:
            summary["before"] = self.evaluate(self.eval_prompts)
            self._write(summary_path, summary)
        totals = dict.fromkeys(PHASES, 0.0)
        bar = None
        if cfg.progress and self.rank == 0:
            from tqdm.auto import tqdm
            bar = tqdm(total=cfg.steps, initial=self.step, desc="ppo", unit="step")
        while self.step < cfg.steps:
            timer = PhaseTimer()
            t0 = time.perf_counter()
            batch = self.rollout(self.order.batch(self.step), timer)
            metrics = {**batch["metrics"], **self.update(batch, timer)}
            dt = time.perf_counter() - t0
            tokens = float(distributed.all_sum(batch["rollout"].mask.sum().double()))
            metrics.update({"tokens_per_s": tokens / dt, "step_s": dt, **{f"time/{k}": timer.t.get(k, 0.0) for k in PHASES}})
            for k in PHASES:
                totals[k] += timer.t.get(k, 0.0)
            self.step += 1
            log.log(self.step, metrics)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(reward=f"{metrics['reward_mean']:+.3f}", kl=f"{metrics['kl']:.3f}",
                                tok_s=f"{metrics['tokens_per_s']:.0f}")
            if not all(math.isfinite(metrics[k]) for k in ("pg_loss", "vf_loss")):
                raise FloatingPointError(f"PPO step {self.step}: non-finite loss {metrics}; lower lr or check the reward")
            if (cfg.save_every and self.step % cfg.save_every == 0) or self.step == cfg.steps:
                self.save()
            if on_step is not None:
                on_step(self)
        if bar is not None:
            bar.close()
        if cfg.eval_prompts and "after" not in summary:
            summary["after"] = self.evaluate(self.eval_prompts)
        summary["time_split_s"] = totals
        summary["steps"] = self.step
        if self.rank == 0:
            self._write(summary_path, summary)
            log.plot(self.out / "curves.png")
            if cfg.save_policy:
                self.net.policy.save_pretrained(self.out / "policy")
                self.tok.save_pretrained(self.out / "policy")
                torch.save(self.net.value_head.state_dict(), self.out / "policy" / "value_head.pt")
        log.close()
        distributed.barrier()
        return summary

    def _write(self, path: Path, obj: dict) -> None:
        if self.rank == 0:
            atomic_write_text(path, dumps(obj, indent=1))


def _check_types(prompts: list[Prompt], spec: RuleSpec, source: str) -> None:
    """Every response type the prompts name is one of the spec's (names or labels)."""
    unknown = set()
    for p in prompts:
        try:
            if p.response_type is not None:
                spec.response_type(p.response_type)
        except KeyError:
            unknown.add(p.response_type)
    if unknown:
        raise UserError(f"{source}: unknown response type(s) {sorted(unknown)}; the spec ({spec.source}) has "
                        f"{', '.join(spec.response_type_names)}")


def _checkpoint_activations(model) -> None:
    """Activation checkpointing per decoder layer (transformers >= 5.2 renamed the switch)."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable({"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def leave_one_out(scores: torch.Tensor, group: int) -> torch.Tensor:
    """Each score minus the mean of the other scores of its group (``group`` adjacent entries): the
    RLOO baseline, unbiased since a completion's own score is not in it. ``group == 1``: unchanged."""
    if group == 1:
        return scores
    g = scores.view(-1, group)
    return ((g - (g.sum(1, keepdim=True) - g) / (group - 1))).reshape(scores.shape)


def _moments(x: torch.Tensor, m: torch.Tensor) -> tuple[float, float]:
    """Mean and unbiased variance (as the fused whitening) of ``x`` over valid positions of all processes."""
    s = distributed.all_sum(torch.stack([m.sum().double(), (x.double() * m).sum(), (x.double() ** 2 * m).sum()]))
    n = float(s[0])
    if n == 0:
        return float("nan"), float("nan")
    return float(s[1]) / n, float((s[2] - s[1] ** 2 / n) / max(n - 1, 1))


def _mean(x: torch.Tensor, m: torch.Tensor) -> float:
    return _moments(x, m)[0]


def _var(x: torch.Tensor, m: torch.Tensor) -> float:
    return _moments(x, m)[1]


def train(cfg: PPOConfig, resume: bool = False, on_step=None, **kwargs) -> dict:
    """Build a ``PPOTrainer`` and run it (``on_step``: see ``PPOTrainer.train``); returns its summary."""
    trainer = PPOTrainer(cfg, **kwargs)
    try:
        return trainer.train(resume=resume, on_step=on_step)
    finally:
        distributed.close()

