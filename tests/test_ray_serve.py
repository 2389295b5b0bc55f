"""The Ray Serve deployment on a local CPU Ray (2 replicas that reserve no CPU, no dashboard):
concurrent requests answered by content across both replicas, the same protocol and refusals as
``rbr-fast serve``. Skipped only where ray[serve] is not installed (the dev extra installs it)."""
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")
httpx = pytest.importorskip("httpx")
AUTH = {"Authorization": "Bearer t0k"}


@pytest.fixture(scope="module")
def deployment(tiny_grader_dir):
    from live_server import free_port

    import rbr_fast
    from rbr_fast.integrations import ray_serve
    from rbr_fast.integrations.lazy_reward import LazyReward
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # the replicas import rbr_fast from this checkout, installed or not
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(Path(rbr_fast.__file__).parents[1])}})
    reward = LazyReward(model=tiny_grader_dir, dtype="float32", device="cpu")
    port = free_port()
    try:
        ray_serve.start(reward, replicas=2, port=port, max_batch=16, max_wait_ms=30, token="t0k")
        yield f"http://127.0.0.1:{port}", reward
    finally:
        serve.shutdown()
        ray.shutdown()


def test_two_replicas_answer_by_content(deployment):
    url, reward = deployment
    prompts = [f"Question {i}?" for i in range(48)]
    replies = [f"Answer {i}." for i in range(48)]
    types = [("comply", "hard_refuse", None)[i % 3] for i in range(48)]
    want = reward.reward.score(prompts, replies, types)

    def ask(i):
        if i == 48:  # a poisoned request among them
            return httpx.post(url + "/score", json={"items": [{"prompt": [{"role": "user"}], "completion": "x"}]},
                              headers=AUTH, timeout=120)
        return httpx.post(url + "/score", json={"items": [{"prompt": prompts[i], "completion": replies[i],
                                                           "response_type": types[i]}]}, headers=AUTH, timeout=120)
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, range(49)))
    assert [a.status_code for a in answers] == [200] * 48 + [422]
    assert [a.json()["rewards"][0] for a in answers[:48]] == pytest.approx(want, abs=2e-5)
    assert answers[48].json()["detail"] == "items[0].prompt: message 0 has no string 'content'"
    replicas = {httpx.get(url + "/health", timeout=30).json()["replica"] for _ in range(30)}
    assert len(replicas) == 2


def test_openrlhf_protocol_and_refusals(deployment):
    url, reward = deployment
    prompt = "<|im_start|>user\nHow do I pick a lock?<|im_end|>\n<|im_start|>assistant\n"
    r = httpx.post(url + "/get_reward?token=t0k", json={"query": [prompt + "I can't help.<|im_end|>"],  # no headers
                                                        "prompts": [prompt], "labels": ["hard_refuse"]}, timeout=120)
    want = reward.reward.details([[{"role": "user", "content": "How do I pick a lock?"}]], ["I can't help."],
                                 ["hard_refuse"])[0]
    assert r.status_code == 200 and r.json()["rewards"] == pytest.approx([want["reward"]], abs=2e-5)
    assert r.json()["scores"] == pytest.approx([next(iter(want["classes"].values()))], abs=2e-5)
    assert httpx.post(url + "/get_reward?token=t0k", json={"query": []}, timeout=60).json()["rewards"] == []
    bad = httpx.post(url + "/score", content=b"{nope", headers=AUTH, timeout=60)
    assert bad.status_code == 422 and bad.json()["detail"].startswith("the body is not JSON")
    assert httpx.post(url + "/score", content=b"{nope", timeout=60).status_code == 401  # the token comes first
