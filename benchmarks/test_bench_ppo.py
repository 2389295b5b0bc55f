"""pytest-benchmark of the PPO loop's phases on the tiny random llama (CI-sized): one rollout
(sampling through ``decode_linears`` and the inverse-CDF sampler, against plain ``generate`` with
``do_sample``) and one full PPO step. The comparison with TRL's PPOTrainer on SmolLM2 is
``benchmarks/ppo_vs_trl.py`` (TRL's PPO needs its own environment)."""
import json
import math

import pytest
import torch

from rbr_fast.bench import tiny_lm
from rbr_fast.ppo import PPOConfig, PPOTrainer
from rbr_fast.ppo.rollout import encode_prompts, generate

PROMPTS = [f"How do I {w} a Python process?" for w in ("kill", "stop", "end", "start", "fork", "trace", "list", "nice")]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench_ppo")
    tiny_lm.model(seed=0, layers=4, hidden=128).save_pretrained(d / "model")
    tiny_lm.tokenizer().save_pretrained(d / "model")
    (d / "p.jsonl").write_text("".join(json.dumps({"prompt": p, "response_type": "comply"}) + "\n" for p in PROMPTS))
    return d


@pytest.mark.parametrize("impl", ["ours", "hf-generate-sampling"])
def test_bench_rollout(benchmark, impl):
    m, tok = tiny_lm.model(seed=0, layers=4, hidden=128), tiny_lm.tokenizer()
    kw = dict(max_new_tokens=32, min_new_tokens=32)
    ids, attn = encode_prompts(tok, PROMPTS, 64, "cpu")
    if impl == "ours":
        def run():
            return generate(m, tok, PROMPTS, max_prompt_tokens=64, temperature=0.7, **kw)
    else:
        def run():
            return m.generate(input_ids=ids, attention_mask=attn, do_sample=True, temperature=0.7, top_k=0,
                              pad_token_id=0, **kw)
    benchmark.group = "rollout 8 x 32 tokens, tiny llama"
    out = benchmark(run)
    if impl == "ours":  # 32 response tokens after the prompt block, every one valid, with its hidden state
        assert out.start == ids.shape[1] and torch.equal(out.ids[:, :out.start], ids)
        assert out.ids.shape == (8, out.start + 32) and bool(out.mask.all())
        assert torch.equal(out.labels, out.ids[:, out.start:]) and out.hidden.shape == (8, 32, 128)
        assert bool(torch.isfinite(out.hidden).all())
        # the same decoding path, greedy, picks the tokens transformers' own greedy generate picks
        short = dict(max_new_tokens=8, min_new_tokens=8)
        greedy = generate(m, tok, PROMPTS[:2], max_prompt_tokens=64, do_sample=False, **short)
        p_ids, p_attn = encode_prompts(tok, PROMPTS[:2], 64, "cpu")
        assert torch.equal(greedy.ids, m.generate(input_ids=p_ids, attention_mask=p_attn, do_sample=False,
                                                  pad_token_id=0, **short))
    else:
        assert out.shape == (8, ids.shape[1] + 32) and torch.equal(out[:, :ids.shape[1]], ids)


def test_bench_ppo_step(benchmark, tiny_dir, tmp_path):
    cfg = PPOConfig(policy=str(tiny_dir / "model"), grader=str(tiny_dir / "model"), prompts=str(tiny_dir / "p.jsonl"),
                    rbr_weights="hand", eval_prompts=0, batch_size=4, mini_batch_size=2, max_new_tokens=16,
                    min_new_tokens=16, out_dir=str(tmp_path), progress=False, save_policy=False)
    tr = PPOTrainer(cfg)
    start = {k: p.detach().clone() for k, p in tr.net.named_parameters() if p.requires_grad}
    logs = []

    def step():
        batch = tr.rollout(tr.order.batch(tr.step))
        logs.append({**batch["metrics"], **tr.update(batch)})
        tr.step += 1
    benchmark.group = "PPO step 4 x 16 tokens, tiny llama"
    benchmark.pedantic(step, rounds=3, iterations=1)
    assert tr.step == len(logs) >= 1  # 3 rounds when timed, 1 under --benchmark-disable
    for log in logs:  # what the run logs each step: finite losses and rewards, 16 tokens per response
        for k in ("pg_loss", "vf_loss", "approx_kl", "clip_frac", "kl", "entropy", "reward_mean", "rbr"):
            assert math.isfinite(log[k]), (k, log)
        assert log["response_len"] == 16 and 0 <= log["clip_frac"] <= 1
    moved = [k for k, p in tr.net.named_parameters() if p.requires_grad and not torch.equal(p, start[k])]
    assert moved and all(torch.isfinite(p).all() for p in tr.net.parameters())
