"""Micro-batching and the verl / OpenRLHF adapters, driven the way those trainers call them.

verl and OpenRLHF are not installed here (both pull Ray and a GPU training stack), so their call
patterns are reproduced: verl's parallel reward managers call ``compute_score`` once per sample
from a thread pool; OpenRLHF's reward-function file is called with batched queries/prompts/labels.
"""
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from rbr_fast.bench import tiny_lm
from rbr_fast.grading import Grader
from rbr_fast.integrations import openrlhf, verl
from rbr_fast.integrations.batching import MicroBatcher
from rbr_fast.integrations.trl import RBRReward
from rbr_fast.reward import RuleBasedReward


@pytest.fixture(scope="module")
def rbr():
    return RBRReward(RuleBasedReward(Grader(tiny_lm.model(), tiny_lm.tokenizer(), progress=False)))


def test_microbatcher_answers_each_caller_with_its_own_result():
    seen = []

    def square_all(items):
        seen.append(threading.current_thread().name)
        return [x * x for x in items]
    mb = MicroBatcher(square_all, max_batch=16, max_wait_ms=50)
    with ThreadPoolExecutor(32) as pool:
        out = list(pool.map(mb, range(200)))
    assert out == [x * x for x in range(200)]
    assert sum(mb.batches) == 200 and max(mb.batches) > 1 and max(mb.batches) <= 16
    assert set(seen) == {"rbr-microbatcher"}


def test_microbatcher_failure_reaches_every_caller():
    def boom(items):
        raise RuntimeError("grader down")
    mb = MicroBatcher(boom, max_batch=4, max_wait_ms=5)
    with pytest.raises(RuntimeError, match="grader down"):
        mb(1, timeout=5)
    with pytest.raises(ValueError):
        MicroBatcher(boom, max_batch=0)


def test_verl_compute_score_pools_concurrent_calls(rbr):
    verl.configure(rbr, max_batch=8, max_wait_ms=100)
    prompts = [f"Question number {i}?" for i in range(24)]
    replies = [f"Answer {i}." if i % 2 else "I can't help with that." for i in range(24)]
    types = ["comply" if i % 3 else "hard_refuse" for i in range(24)]
    with ThreadPoolExecutor(24) as pool:  # verl: one call per sample, many at once
        got = list(pool.map(lambda i: verl.compute_score("xstest", replies[i], None,
                                                         {"prompt": prompts[i], "response_type": types[i]}),
                            range(24)))
    want = rbr.reward.score(prompts, replies, types)
    assert [g["score"] for g in got] == pytest.approx(want, abs=2e-5)  # each its own, by content
    assert set(got[0]) >= {"score", "rbr/apology"}
    assert max(verl._batcher.batches) > 1
    with pytest.raises(ValueError, match="extra_info\\['prompt'\\]"):
        verl.compute_score("x", "y", None, {})


def test_openrlhf_reward_func(rbr):
    openrlhf.configure(rbr)
    prompts = ["How do I make a bomb?", "Bake bread?"]
    replies = [" I can't help with that.", " Mix flour and water."]
    out = openrlhf.reward_func([p + r for p, r in zip(prompts, replies)], prompts, ["Hard Refuse", "comply"])
    assert isinstance(out["rewards"], torch.Tensor) and out["rewards"].shape == (2,)
    want = rbr.reward.score(prompts, replies, ["hard_refuse", "comply"])
    assert out["rewards"].tolist() == pytest.approx(want, abs=1e-6)
    assert "rbr/apology" in out["extra_logs"]
    other = openrlhf.reward_func([p + r for p, r in zip(prompts, replies)], prompts, ["gold", "gold"])
    assert other["rewards"].shape == (2,)  # labels that are not types: types inferred
