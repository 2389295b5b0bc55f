"""The TRL adapter, driven the way TRL drives it: a real GRPOTrainer run on a tiny random model."""
import asyncio
import importlib.util
import inspect
import pickle

import pytest
import torch

from rbr_fast.bench import tiny_lm
from rbr_fast.grading import Grader
from rbr_fast.integrations.trl import RBRReward, async_reward_func, rbr_reward_async
from rbr_fast.reward import RuleBasedReward


@pytest.fixture(scope="module")
def func():
    return RBRReward(RuleBasedReward(Grader(tiny_lm.model(), tiny_lm.tokenizer(), progress=False)))


def test_call_like_trl(func):
    logged = {}
    prompts = [[{"role": "user", "content": "How do I make a bomb?"}], [{"role": "user", "content": "Bake bread?"}]]
    completions = [[{"role": "assistant", "content": "I can't help with that."}],
                   [{"role": "assistant", "content": "Mix flour and water."}]]
    out = func(prompts=prompts, completions=completions, completion_ids=[[1], [2]],
               response_type=["hard_refuse", "comply"], trainer_state=None, log_extra=lambda *a: None,
               log_metric=lambda k, v: logged.__setitem__(k, v))
    want = func.reward.score(prompts, completions, ["hard_refuse", "comply"])
    assert out == pytest.approx(want) and len(logged) == len(func.reward.spec.propositions)
    assert all(k.startswith("rbr/") and 0 <= v <= 1 for k, v in logged.items())
    plain = func(prompts=["a", "b"], completions=["x", "y"])  # strings, no type column: inferred
    assert len(plain) == 2 and func.__name__ == "rbr"


def test_picklable_and_async(func):
    lazy = RBRReward(model="/nowhere", weights=None)
    back = pickle.loads(pickle.dumps(lazy))
    assert back._reward is None and back.model == "/nowhere"
    assert inspect.iscoroutinefunction(rbr_reward_async)
    f = async_reward_func(func)
    assert inspect.iscoroutinefunction(f)
    got = asyncio.run(f(prompts=["a"], completions=["b"], response_type=["comply"]))
    assert got == pytest.approx(func(prompts=["a"], completions=["b"], response_type=["comply"]))


@pytest.mark.skipif(importlib.util.find_spec("trl") is None, reason="trl is not installed (pip install trl)")
def test_grpo_trainer_two_steps(func, tmp_path):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer
    ds = Dataset.from_list([{"prompt": [{"role": "user", "content": p}], "response_type": t}
                            for p, t in [("How do I make a bomb?", "hard_refuse"), ("Bake bread?", "comply")] * 4])
    calls = []

    def counted(**kw):
        calls.append(len(kw["prompts"]))
        return func(**kw)
    counted.__name__ = "rbr"
    args = GRPOConfig(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, num_generations=2,
                      max_completion_length=8, logging_steps=1, report_to=[], use_cpu=True, bf16=False,
                      save_strategy="no", seed=0)
    trainer = GRPOTrainer(model=tiny_lm.model(), reward_funcs=[counted], args=args, train_dataset=ds,
                          processing_class=tiny_lm.tokenizer())
    trainer.train()
    assert calls and all(n > 0 for n in calls)
    logs = [h for h in trainer.state.log_history if "rbr/apology" in h or any(k.endswith("rbr/apology") for k in h)]
    assert logs, trainer.state.log_history[-1]
    assert torch.isfinite(torch.tensor([h["loss"] for h in trainer.state.log_history if "loss" in h])).all()
