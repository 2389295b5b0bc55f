"""pytest-benchmark of the PPO loop's phases on the tiny random llama (CI-sized): one rollout
(sampling through ``decode_linears`` and the inverse-CDF sampler, against plain ``generate`` with
``do_sample``) and one full PPO step. The comparison with TRL's PPOTrainer on SmolLM2 is
``benchmarks/ppo_vs_trl.py`` (TRL's PPO needs its own environment)."""
import json

import pytest
import torch

from rbr_fast.bench import tiny_lm
from rbr_fast.ppo import PPOConfig, PPOTrainer
from rbr_fast.ppo.rollout import encode_prompts, generate
from rbr_fast.ppo.trainer import _Timer

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
    if impl == "ours":
        def run():
            return generate(m, tok, PROMPTS, max_prompt_tokens=64, temperature=0.7, **kw)
    else:
        ids, attn = encode_prompts(tok, PROMPTS, 64, "cpu")

        def run():
            return m.generate(input_ids=ids, attention_mask=attn, do_sample=True, temperature=0.7, top_k=0,
                              pad_token_id=0, **kw)
    benchmark.group = "rollout 8 x 32 tokens, tiny llama"
    benchmark(run)


def test_bench_ppo_step(benchmark, tiny_dir, tmp_path):
    cfg = PPOConfig(policy=str(tiny_dir / "model"), grader=str(tiny_dir / "model"), prompts=str(tiny_dir / "p.jsonl"),
                    rbr_weights="hand", eval_prompts=0, batch_size=4, mini_batch_size=2, max_new_tokens=16,
                    min_new_tokens=16, out_dir=str(tmp_path), progress=False, save_policy=False)
    tr = PPOTrainer(cfg)

    def step():
        t = _Timer()
        tr.update(tr.rollout(tr.order.batch(tr.step), t), t)
        tr.step += 1
    benchmark.group = "PPO step 4 x 16 tokens, tiny llama"
    benchmark.pedantic(step, rounds=3, iterations=1)
    assert torch.isfinite(next(tr.net.parameters())).all()
