"""``client.score_remote`` (what ``RBRServerReward`` and verl's ``server_url`` use) against a real
``rbr-fast serve`` on loopback: a batch over the body limit split into requests, 503s injected by a
proxy, a server restart, and the one-line failure after the retry deadline. Every reward is
checked by content and order against direct scoring."""
import asyncio
import importlib.util
import re
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from live_server import Server, free_port

from rbr_fast.integrations.client import score_remote
from rbr_fast.integrations.trl import RBRServerReward

pytestmark = pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("fastapi", "uvicorn", "httpx",
                                                                                 "prometheus_client")),
                                reason="needs the serve extra (pip install 'rbr_fast[serve]')")
TYPES = ["comply", "hard_refuse", None, "safe_refuse_1"]


def batch(n: int, words: int = 1):
    return [(f"Question {i}: how do I do thing {i % 5}?", f"Answer {i}: " + "some words here " * words, TYPES[i % 4])
            for i in range(n)]


def want(lazy_reward, items):
    p, c, t = map(list, zip(*items))
    return lazy_reward.reward.score(p, c, t)


class Flaky:
    """An HTTP proxy in front of ``upstream`` that answers the first ``fail`` POSTs with 503."""

    def __init__(self, upstream: str, fail: int):
        self.posts = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                proxy.posts += 1
                if proxy.posts <= fail:
                    status, out = 503, b'{"detail": "the queue is full; retry later"}'
                else:
                    req = urllib.request.Request(upstream + self.path, body, dict(self.headers), method="POST")
                    try:
                        with urllib.request.urlopen(req, timeout=120) as r:
                            status, out = r.status, r.read()
                    except urllib.error.HTTPError as e:
                        status, out = e.code, e.read()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):
                pass
        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def stop(self):
        self.http.shutdown()


def test_an_oversized_batch_is_split_under_the_body_limit(lazy_reward):
    server = Server(lazy_reward, token="t", max_body_bytes=20_000)
    try:
        items = batch(150, words=8)  # ~35 kB of JSON: as one request it would get 413
        got = asyncio.run(score_remote(server.url, items, "t", max_body_bytes=20_000))
        import httpx
        metrics = httpx.get(server.url + "/metrics", headers={"Authorization": "Bearer t"}).text
        huge = [("q", "x" * 30_000, None)]
        with pytest.raises(ValueError, match="item 0 is .* over the server's body limit of 20000 bytes"):
            asyncio.run(score_remote(server.url, huge, "t", max_body_bytes=20_000))
    finally:
        server.stop()
    assert [d["reward"] for d in got.details] == pytest.approx(want(lazy_reward, items), abs=2e-5)
    assert got.response_types == list(lazy_reward.spec.response_type_names)
    sent = float(re.search(r'^rbr_requests_total\{code="200",path="/score"\} (\S+)$', metrics, re.M).group(1))
    assert sent >= 2  # each body under 20 kB


def test_503s_are_retried_and_trl_logs_every_type(lazy_reward):
    server = Server(lazy_reward)
    proxy = Flaky(server.url, fail=3)
    try:
        items = batch(8)
        fn = RBRServerReward(proxy.url, retry_s=30)
        metrics = {}
        p, c, t = map(list, zip(*items))
        got = asyncio.run(fn(prompts=p, completions=c, response_type=t, log_metric=metrics.__setitem__))
    finally:
        proxy.stop()
        server.stop()
    assert proxy.posts == 4 and got == pytest.approx(want(lazy_reward, items), abs=2e-5)
    assert {f"rbr/{x}/reward" for x in lazy_reward.spec.response_type_names} <= set(metrics)


def test_a_server_restart_is_waited_for(lazy_reward):
    port = free_port()
    first = Server(lazy_reward, port=port)
    items = batch(6)
    assert [d["reward"] for d in asyncio.run(score_remote(first.url, items)).details] == pytest.approx(
        want(lazy_reward, items), abs=2e-5)
    first.stop()
    second = []
    threading.Timer(1.5, lambda: second.append(Server(lazy_reward, port=port))).start()
    try:
        t0 = time.monotonic()
        got = asyncio.run(score_remote(first.url, items, retry_s=60))
        assert time.monotonic() - t0 >= 1.0  # it did wait for the new server
    finally:
        for s in second:
            s.stop()
    assert [d["reward"] for d in got.details] == pytest.approx(want(lazy_reward, items), abs=2e-5)


def test_it_fails_in_one_line_after_the_deadline():
    url = f"http://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    with pytest.raises(RuntimeError) as e:
        asyncio.run(score_remote(url, batch(2), retry_s=1.0))
    assert 1.0 <= time.monotonic() - t0 < 5 and "\n" not in str(e.value)
    assert re.match(rf"{url}/score: no answer after \d+ tries \(ConnectError", str(e.value))


def test_the_server_grades_answers_and_reads_labels(lazy_reward):
    from rbr_fast.integrations.lazy_reward import LazyReward
    think = "<think>" + "First I weigh whether this request is safe to answer. " * 30 + "</think>\n"
    items = batch(4)
    servers = [Server(lazy_reward), Server(LazyReward(lazy_reward.reward, reasoning="keep"))]
    try:
        strip, keep = (asyncio.run(score_remote(s.url, [(p, think + c, t) for p, c, t in items])) for s in servers)
        labelled = asyncio.run(score_remote(servers[0].url, [(p, c, None, t) for p, c, t in items]))
    finally:
        for s in servers:
            s.stop()
    plain = want(lazy_reward, items)
    assert [d["reward"] for d in strip.details] == pytest.approx(plain, abs=2e-5)
    assert max(abs(d["reward"] - w) for d, w in zip(keep.details, plain)) > 1e-3
    assert [d["reward"] for d in labelled.details] == pytest.approx(plain, abs=2e-5)  # a label naming a type is one


def test_plain_callers_share_one_loop_and_client_across_a_restart(lazy_reward):
    """``run_sync`` (OpenRLHF's reward threads, verl's remote-manager actors): calls from many threads
    run on one background loop with one pooled client, and its kept-alive connections to a server that
    restarted are retried, not fatal."""
    from rbr_fast.integrations import client
    port = free_port()
    first = Server(lazy_reward, port=port)
    items = batch(8)
    results, errors = [None] * 8, []

    def call(i):
        try:
            results[i] = client.run_sync(score_remote(first.url, [items[i]], retry_s=60)).details[0]["reward"]
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == pytest.approx(want(lazy_reward, items), abs=2e-5)
    background = client._background
    shared = background.http
    assert shared is not None and background.loop.is_running()
    first.stop()
    second = Server(lazy_reward, port=port)
    try:
        got = client.run_sync(score_remote(first.url, items[:3], retry_s=60))
    finally:
        second.stop()
    assert [d["reward"] for d in got.details] == pytest.approx(want(lazy_reward, items[:3]), abs=2e-5)
    assert client._background is background and background.http is shared


def test_run_sync_refuses_a_running_loop():
    """Inside a running loop it would block that loop (or, on its own loop, wait on itself): it says so."""
    from rbr_fast.integrations import client

    async def inside():
        with pytest.raises(RuntimeError, match="inside a running event loop: await the call instead"):
            client.run_sync(asyncio.sleep(0))
    asyncio.run(inside())
