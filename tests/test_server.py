"""The reward server over real HTTP on loopback (uvicorn in a thread, tiny model): answers by
content under concurrency, backpressure, size limits, bad input, auth, a client dropping out."""
import importlib.util
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from live_server import Server

pytestmark = pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("fastapi", "uvicorn", "httpx",
                                                                                 "prometheus_client")),
                                reason="fastapi, uvicorn, httpx and prometheus_client are needed "
                                       "(pip install 'rbr_fast[serve]')")


@pytest.fixture(scope="module")
def server(lazy_reward):
    s = Server(lazy_reward, max_batch=32, max_wait_ms=20, max_body_bytes=100_000, token="s3cret")
    yield s
    s.stop()


AUTH = {"Authorization": "Bearer s3cret"}


def test_concurrent_requests_each_get_their_own_rewards(server, lazy_reward):
    import httpx
    prompts = [f"Question {i}?" for i in range(40)]
    replies = [f"Answer number {i}." for i in range(40)]
    want = lazy_reward.reward.score(prompts, replies, ["comply"] * 40)

    def ask(i):
        with httpx.Client(timeout=60) as c:
            r = c.post(server.url + "/get_reward", headers=AUTH,
                       json={"query": [prompts[i] + replies[i]], "prompts": [prompts[i]], "labels": ["comply"]})
            assert r.status_code == 200, r.text
            return r.json()["rewards"][0]
    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(ask, range(40)))
    assert got == pytest.approx(want, abs=2e-5)
    m = httpx.get(server.url + "/metrics", headers=AUTH).text
    count = _metric(m, "rbr_batch_size_count")
    assert count < 40 and _metric(m, "rbr_batch_size_sum") >= 40  # fewer grader calls than requests
    assert _metric(m, 'rbr_requests_total{code="200",path="/get_reward"}') >= 40
    assert "rbr_request_latency_seconds_bucket" in m and "rbr_queue_depth" in m


def _metric(text: str, name: str) -> float:
    return float(re.search(rf"^{re.escape(name)} (\S+)$", text, re.M).group(1))


def test_score_endpoint_and_health(server, lazy_reward):
    import httpx
    r = httpx.post(server.url + "/score", headers=AUTH, timeout=60,
                   json={"items": [{"prompt": "Bake bread?", "completion": "Mix flour.", "response_type": "Comply"}],
                         "details": True})
    assert r.status_code == 200 and set(r.json()["details"][0]["classes"]) >= {"ideal"}
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}  # no token needed


def test_bad_requests_get_clear_4xx_and_the_server_stays_up(server):
    import httpx
    u = server.url
    assert httpx.post(u + "/get_reward", json={"query": ["x"]}).status_code == 401
    assert httpx.post(u + "/get_reward", json={"query": ["x"]}, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert httpx.post(u + "/get_reward?token=nope", json={"query": ["x"]}).status_code == 401
    # OpenRLHF's client sends no headers: the token in the URL
    assert httpx.post(u + "/get_reward?token=s3cret", json={"query": ["x"]}, timeout=60).status_code == 200
    r = httpx.post(u + "/get_reward", content=b"\x00\xff garbage", headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 422
    r = httpx.post(u + "/get_reward", json={"query": "not a list"}, headers=AUTH)
    assert r.status_code == 422 and "query" in r.text
    r = httpx.post(u + "/score", json={"items": [{"prompt": "a", "completion": "b", "response_type": "nope"}]},
                   headers=AUTH)
    assert r.status_code == 422 and "response_type" in r.text
    assert httpx.post(u + "/get_reward", content=b"x" * 200_000, headers=AUTH).status_code == 413
    chunked = httpx.post(u + "/get_reward", content=(b"x" * 50_000 for _ in range(4)),  # no Content-Length
                         headers={**AUTH, "content-type": "application/json"})
    assert chunked.status_code == 413 and "body over" in chunked.text
    assert httpx.post(u + "/get_reward", content=b"query=x", headers={**AUTH, "content-type": "text/plain"}).status_code == 422
    with socket.create_connection(("127.0.0.1", server.port)) as s:  # a client that dies mid-request
        s.sendall(b"POST /get_reward HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"query\": [")
    assert httpx.get(u + "/health").status_code == 200


class _Slow:
    """The reward with 0.2 s per grader call: requests pile up in the queue."""

    def __init__(self, inner):
        self.inner, self.spec = inner, inner.spec

    def details(self, items):
        time.sleep(0.2)
        return self.inner.details(items)


def test_full_queue_answers_503_and_a_request_larger_than_the_queue_413(lazy_reward):
    import httpx
    s = Server(_Slow(lazy_reward), max_batch=1, max_wait_ms=0, max_queue=2)
    try:
        r = httpx.post(s.url + "/score", json={"items": [{"prompt": "a", "completion": "b"}] * 3}, timeout=30)
        assert r.status_code == 413 and "more than the queue holds" in r.text  # could never fit: not retriable
        with ThreadPoolExecutor(6) as ex:
            answers = list(ex.map(lambda i: httpx.post(s.url + "/score", timeout=30, json={
                "items": [{"prompt": f"p{i}", "completion": "c", "response_type": "comply"}]}), range(6)))
        codes = sorted(r.status_code for r in answers)
        assert 200 in codes and 503 in codes and set(codes) <= {200, 503}
        assert all(r.headers["retry-after"] == "1" for r in answers if r.status_code == 503)
    finally:
        s.stop()


def test_shutdown_answers_queued_requests(lazy_reward):
    """Stopping the server (SIGTERM in production: uvicorn's should_exit) answers every request already
    accepted, queued ones included, before the process ends."""
    import httpx
    s = Server(_Slow(lazy_reward), max_batch=1, max_wait_ms=0)
    with ThreadPoolExecutor(12) as ex:
        futs = [ex.submit(httpx.post, s.url + "/score", json={"items": [{"prompt": f"p{i}", "completion": f"c{i}"}]},
                          timeout=60) for i in range(12)]
        state = s.server.server_state
        for _ in range(400):  # until every request has arrived (a few answered, the rest queued)
            if len(state.tasks) + state.total_requests >= 12:
                break
            time.sleep(0.05)
        s.server.should_exit = True
        answers = [f.result() for f in futs]
    s.thread.join(30)
    assert [r.status_code for r in answers] == [200] * 12
    assert not s.thread.is_alive()


def test_request_past_its_timeout_gets_504_and_the_server_goes_on(lazy_reward):
    import httpx
    s = Server(_Slow(lazy_reward), max_batch=1, timeout=0.05)
    try:
        item = {"items": [{"prompt": "p", "completion": "c", "response_type": "comply"}]}
        r = httpx.post(s.url + "/score", json=item, timeout=30)
        assert r.status_code == 504 and "not scored within" in r.text
        time.sleep(0.3)  # the abandoned item's grader call ends; the worker takes the next one
        assert httpx.get(s.url + "/health").json() == {"status": "ok"}
        assert httpx.get(s.url + "/metrics").status_code == 200
    finally:
        s.stop()


def test_server_client_for_trl_sends_multimodal_and_tool_call_messages(server, lazy_reward):
    """``RBRServerReward``: TRL's conversational shapes (an image part, a tool call) go over JSON and
    are graded as they are locally."""
    import asyncio

    from rbr_fast.integrations.trl import RBRServerReward
    prompt = [{"role": "user", "content": [{"type": "image", "image": object()}, {"type": "text", "text": "What?"}]}]
    completion = [{"role": "assistant", "content": None, "tool_calls": [
        {"type": "function", "function": {"name": "look", "arguments": {"at": "image"}}}]},
                  {"role": "assistant", "content": "A cat."}]
    f = RBRServerReward(server.url, token="s3cret")
    got = asyncio.run(f(prompts=[prompt, "Hi"], completions=[completion, "Hello."], response_type=["comply", None]))
    want = lazy_reward.reward.score([prompt, "Hi"], [completion, "Hello."], ["comply", None])
    assert got == pytest.approx(want, abs=2e-5)
    with pytest.raises(RuntimeError, match="answered 401"):
        asyncio.run(RBRServerReward(server.url)(prompts=["a"], completions=["b"]))
