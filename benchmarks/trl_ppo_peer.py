"""Peer benchmark: time TRL's PPOTrainer on CPU, for comparison with rbr_fast's own PPO loop.

Runs in its own venv (benchmarks/setup_trl_ppo_venv.sh; trl 1.12.0 is the last release with PPOTrainer) and
never imports rbr_fast.  Usage:

    .venv-trlppo/bin/python benchmarks/trl_ppo_peer.py --config '{"model": DIR, "prompts": [...], ...}'

Config keys: model (local llama causal-LM dir with tokenizer), prompts (user messages, chat template with
add_generation_prompt=True, left padded), batch_size, mini_batch_size, ppo_epochs, response_length, temperature,
kl_coef, steps, warmup_steps, seed, threads, lr.  Prints ONE JSON line on stdout (everything TRL prints goes to
stderr).

Models: policy and reference = AutoModelForCausalLM(model) (separate copies); value and reward =
AutoModelForSequenceClassification(model, num_labels=1), each with its score head re-drawn from
torch.manual_seed(seed) (so both heads are deterministic and identical).  fp32, CPU, no gradient checkpointing,
no eval, no logging integrations, no saving.  total_episodes = (warmup_steps + steps) * batch_size, so TRL runs
exactly warmup_steps + steps PPO updates; the first warmup_steps are not reported.

Timing.  A PPO step is the interval between consecutive TrainerCallback.on_step_end calls (the first one starts
at on_train_begin): it covers the whole body of one iteration of PPOTrainer.train()'s update loop, i.e. fetching
the prompt batch, rollout, reward/advantage computation, all PPO epochs, metric gathering, lr_scheduler.step(),
plus the previous iteration's trailing empty_cache()/gc.collect().  Phases are measured by wrapping the module-level
names in trl.experimental.ppo.ppo_trainer (mean seconds per timed step):
  generate           batch_generation(): policy.generate() with output_scores (the rollout logprobs are taken from
                     these generation scores, so there is no extra policy forward pass), plus stacking/padding.
  ref_logprobs       forward(ref_model, ...): the reference model's full forward on query+response (the following
                     selective_log_softmax over the response is cheap and counted in `update`).
  values_and_reward  get_reward(): value-model forward (per-token values) and reward-model forward (score).
  update             step time minus the three above: PPO epochs (policy+value forward, backward, AdamW), plus the
                     cheap rollout glue (logprob gather, KL/rewards, GAE, whitening), metrics, gc.

Workarounds / deviations from TRL defaults (each minimal, and why):
  * stop_token=None, missing_eos_penalty=None: TRL then clears the policy's eos_token_id, so generation never stops
    early and every response is exactly response_length tokens (TRL passes only max_new_tokens, no
    min_new_tokens).  NB: SmolLM2's pad token == eos (<|im_end|>); TRL treats every pad-id token as padding, so a
    sampled <|im_end|> ends the response for masking/reward purposes (compute cost is unchanged).
  * accelerator.gradient_accumulation_steps forced to 1 after construction: TRL sets rollout batch =
    per_device_train_batch_size * gradient_accumulation_steps and wraps each micro-batch in accelerator.accumulate,
    so with num_mini_batches > 1 it would take only ONE optimizer step per PPO epoch (more on the last batch of a
    dataloader pass, where accelerate forces a sync).  With per_device_train_batch_size = mini_batch_size and GA
    forced to 1, TRL takes exactly one AdamW step per mini-batch, ppo_epochs * batch_size/mini_batch_size per step.
  * local_rollout_forward_batch_size = batch_size (generate / score the whole rollout batch at once);
    num_sample_generations=0 (no sample-completion eval); bf16/gradient_checkpointing off (TRL defaults them on);
    lr_scheduler_type="constant"; prompts are cycled if fewer than batch_size (TRL's dataloader drops ragged batches).
"""
import argparse
import contextlib
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from collections import defaultdict

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
import torch  # noqa: E402
import transformers  # noqa: E402
import trl  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback)

try:
    import trl.experimental.ppo.ppo_trainer as ppo_mod
    from trl.experimental.ppo import PPOConfig, PPOTrainer
except ImportError:  # older trl layout (untested; PPOTrainer API differed there)
    import trl.trainer.ppo_trainer as ppo_mod
    from trl import PPOConfig, PPOTrainer

PHASES = ("generate", "ref_logprobs", "values_and_reward")


class StepClock(TrainerCallback):
    """Records wall time and phase times of every PPO update (boundary = on_step_end)."""

    def __init__(self):
        self.cur, self.steps = defaultdict(float), []

    def on_train_begin(self, args, state, control, **kw):
        self.cur.clear()
        self.t = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        now = time.perf_counter()
        self.steps.append((now - self.t, dict(self.cur)))
        self.cur.clear()
        self.t = now


def patch(name, phase, clock, only_if=None):
    fn = getattr(ppo_mod, name)

    def wrapper(*a, **k):
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            if only_if is None or only_if(a):
                clock.cur[phase] += time.perf_counter() - t

    setattr(ppo_mod, name, wrapper)


def scalar_head_model(path, seed):
    m = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32)
    torch.manual_seed(seed)
    with torch.no_grad():
        m.score.weight.normal_(0.0, m.config.initializer_range)
        if getattr(m.score, "bias", None) is not None:
            m.score.bias.zero_()
    return m


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="JSON object with the config keys in the module docstring")
    c = json.loads(ap.parse_args().config)
    B, mb, steps, warm, seed = c["batch_size"], c["mini_batch_size"], c["steps"], c.get("warmup_steps", 0), c.get("seed", 0)
    if B % mb:
        raise SystemExit("batch_size must be a multiple of mini_batch_size")
    torch.set_num_threads(c.get("threads", os.cpu_count()))

    tok = AutoTokenizer.from_pretrained(c["model"])
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    prompts = [c["prompts"][i % len(c["prompts"])] for i in range(max(B, len(c["prompts"])))]
    texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
             for p in prompts]
    ds = Dataset.from_dict({"input_ids": [tok(t, add_special_tokens=False)["input_ids"] for t in texts]})

    torch.manual_seed(seed)
    policy = AutoModelForCausalLM.from_pretrained(c["model"], dtype=torch.float32)
    ref = AutoModelForCausalLM.from_pretrained(c["model"], dtype=torch.float32)
    value, reward = scalar_head_model(c["model"], seed), scalar_head_model(c["model"], seed)

    out_dir = tempfile.mkdtemp(prefix="trl_ppo_peer_")
    args = PPOConfig(
        output_dir=out_dir, use_cpu=True, seed=seed, bf16=False, fp16=False, gradient_checkpointing=False,
        report_to=[], logging_strategy="no", save_strategy="no", eval_strategy="no", disable_tqdm=True,
        per_device_train_batch_size=mb, gradient_accumulation_steps=B // mb, num_mini_batches=B // mb,
        local_rollout_forward_batch_size=B, num_ppo_epochs=c["ppo_epochs"], response_length=c["response_length"],
        temperature=c.get("temperature", 1.0), kl_coef=c.get("kl_coef", 0.05), learning_rate=c.get("lr", 1e-6),
        lr_scheduler_type="constant", total_episodes=(warm + steps) * B, num_sample_generations=0,
        stop_token=None, missing_eos_penalty=None,
    )
    clock = StepClock()
    with contextlib.redirect_stdout(sys.stderr):
        trainer = PPOTrainer(args=args, processing_class=tok, model=policy, ref_model=ref, reward_model=reward,
                             value_model=value, train_dataset=ds, callbacks=[clock])
        trainer.accelerator.gradient_accumulation_steps = 1  # one optimizer step per mini-batch (see docstring)
        patch("batch_generation", "generate", clock)
        patch("forward", "ref_logprobs", clock, only_if=lambda a: a[0] is trainer.ref_model)
        patch("get_reward", "values_and_reward", clock)
        trainer.train()

    timed = clock.steps[warm:]
    if len(clock.steps) != warm + steps or not timed:
        raise SystemExit(f"expected {warm + steps} PPO updates, got {len(clock.steps)}")
    secs = [s for s, _ in timed]
    phases = {p: statistics.fmean(ph.get(p, 0.0) for _, ph in timed) for p in PHASES}
    phases["update"] = statistics.fmean(s - sum(ph.get(p, 0.0) for p in PHASES) for s, ph in timed)
    print(json.dumps({
        "trl_version": trl.__version__, "transformers_version": transformers.__version__,
        "torch_version": torch.__version__, "steps": len(timed), "step_seconds": secs,
        "tokens_per_s": B * c["response_length"] / statistics.median(secs),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "phases": phases,
    }))


if __name__ == "__main__":
    main()
