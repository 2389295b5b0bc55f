"""The reward server isolates failures: a bad item fails only its own request (422 naming the item
and field, never joining the queue), a grader failure only the request at fault (500), stalled
clients are cut off, and bad start-up options stop ``rbr-fast serve`` with one error line."""
import importlib.util
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from live_server import Server

pytestmark = pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("fastapi", "uvicorn", "httpx",
                                                                                 "prometheus_client")),
                                reason="needs the serve extra (pip install 'rbr_fast[serve]')")


@pytest.fixture(scope="module")
def server(lazy_reward):
    s = Server(lazy_reward, max_batch=16, max_wait_ms=30, max_body_bytes=50_000, max_queue=64)
    yield s
    s.stop()


def test_poison_beside_eight_good_concurrent_requests(server, lazy_reward):
    """20 rounds of 1 bad + 8 good concurrent requests: every good one gets its own reward (checked
    against direct scoring), the bad one a 422 naming its item and field, and no one another's text."""
    import httpx
    rounds, good = 20, 8
    prompts = [f"Round {r} question {i}?" for r in range(rounds) for i in range(good)]
    replies = [f"Answer {i} of round {r}." for r in range(rounds) for i in range(good)]
    types = [("comply", "hard_refuse", None)[i % 3] for i in range(len(prompts))]
    want = lazy_reward.reward.score(prompts, replies, types)
    poisons = [{"prompt": [{"role": "user"}], "completion": "x"},  # a message without content
               {"prompt": "p", "completion": [{"role": "assistant", "content": [7]}]},  # a content part not a part
               {"prompt": "p", "completion": "c", "response_type": "\ud800bad"}]  # lone surrogate, unknown type

    with httpx.Client(timeout=60) as http, ThreadPoolExecutor(good + 1) as pool:
        for r in range(rounds):
            poison = poisons[r % len(poisons)]
            bad = pool.submit(http.post, server.url + "/score", content=json.dumps({"items": [poison]}),
                              headers={"content-type": "application/json"})
            rows = range(r * good, (r + 1) * good)
            answers = list(pool.map(lambda i: http.post(server.url + "/score", json={"items": [
                {"prompt": prompts[i], "completion": replies[i], "response_type": types[i]}]}), rows))
            assert [a.status_code for a in answers] == [200] * good
            got = [a.json()["rewards"][0] for a in answers]
            assert got == pytest.approx(want[r * good:(r + 1) * good], abs=2e-5)
            b = bad.result()
            assert b.status_code == 422 and b.json()["detail"].startswith("items[0].")


def _post(server, body, **kw):
    import httpx
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(server.url + kw.pop("path", "/score"), content=content,
                      headers={"content-type": "application/json"}, timeout=30)


OK = {"prompt": "Bake bread?", "completion": "Mix flour."}
BAD_INPUTS = [  # (path, body, status, text the one-line message must contain)
    ("/score", b"{not json", 422, "the body is not JSON"),
    ("/score", b"\xff\xfe\x00garbage", 422, "the body is not JSON"),
    ("/score", [1, 2], 422, "the body must be a JSON object"),
    ("/score", {"details": True}, 422, "items: required"),
    ("/score", {"items": {"prompt": "a"}}, 422, "items must be a list"),
    ("/score", {"items": [OK, "text"]}, 422, "items[1] must be an object"),
    ("/score", {"items": [OK, {"completion": "c"}]}, 422, "items[1].prompt: required"),
    ("/score", {"items": [OK, OK, {"prompt": [{"role": "user"}], "completion": "c"}]}, 422,
     "items[2].prompt: message 0 has no string 'content'"),
    ("/score", {"items": [{"prompt": "p", "completion": 42}]}, 422, "items[0].completion must be a string or a list"),
    ("/score", {"items": [{"prompt": "p", "completion": [{"role": "assistant", "content": "x", "tool_calls": 3}]}]},
     422, "items[0].completion: message 0: 'tool_calls' must be a list"),
    ("/score", {"items": [{**OK, "response_type": "nope"}]}, 422,
     "items[0].response_type: unknown response type 'nope'"),
    ("/score", {"items": [{**OK, "response_type": 3}]}, 422, "items[0].response_type must be a string or null"),
    ("/score", {"items": [{**OK, "response_type": "\ud83d"}]}, 422, "unknown response type '\\ud83d'"),
    ("/score", {"items": [OK], "details": "yes"}, 422, "details must be true or false"),
    ("/score", {"items": [OK] * 65}, 413, "65 items are more than the queue holds (64)"),
    ("/score", b"x" * 60_000, 413, "body over 50000 bytes"),
    ("/get_reward", {"query": "text"}, 422, "query must be a list of strings"),
    ("/get_reward", {"prompts": ["p"]}, 422, "query: required"),
    ("/get_reward", {"query": ["a", 5]}, 422, "query[1] must be a string"),
    ("/get_reward", {"query": ["a", "b"], "prompts": ["a"]}, 422, "prompts has 1 entries for 2 queries"),
    ("/get_reward", {"query": ["a"], "labels": ["x", "y"]}, 422, "labels has 2 entries for 1 queries"),
]


@pytest.mark.parametrize("path,body,status,text", BAD_INPUTS, ids=[t for *_, t in BAD_INPUTS])
def test_bad_input_gets_a_one_line_message_naming_the_field(server, path, body, status, text):
    r = _post(server, body, path=path)
    detail = r.json()["detail"]
    assert r.status_code == status and text in detail, detail
    assert "\n" not in detail and "Traceback" not in r.text


def test_surrogates_in_texts_are_graded_as_replacement_characters(server, lazy_reward):
    r = _post(server, {"items": [{"prompt": "Why\ud800?", "completion": "Because\udfff."}]})
    assert r.status_code == 200
    assert r.json()["rewards"] == pytest.approx(lazy_reward.reward.score(["Why\ufffd?"], ["Because\ufffd."]), abs=2e-5)
    assert _post(server, {"query": []}, path="/get_reward").json() == {"rewards": [], "scores": [], "extra_logs": {}}


class _Flaky:
    """The reward whose grader fails on any batch holding the completion "boom"."""

    def __init__(self, inner):
        self.inner, self.spec = inner, inner.spec

    def details(self, items):
        if any(c == "boom" for _, c, _ in items):
            raise RuntimeError("grader exploded on 'boom'")
        return self.inner.details(items)


def test_a_grader_failure_fails_only_the_request_at_fault(lazy_reward):
    import httpx
    s = Server(_Flaky(lazy_reward), max_batch=16, max_wait_ms=200)
    try:
        items = [{"prompt": f"q{i}", "completion": "boom" if i == 3 else f"a{i}", "response_type": "comply"}
                 for i in range(6)]
        with ThreadPoolExecutor(6) as pool:  # all six share one grader batch, which fails
            answers = list(pool.map(lambda it: httpx.post(s.url + "/score", json={"items": [it]}, timeout=30), items))
        assert [a.status_code for a in answers] == [200, 200, 200, 500, 200, 200]
        assert answers[3].json()["detail"] == "scoring failed: RuntimeError: grader exploded on 'boom'"
        assert all("boom" not in a.text for i, a in enumerate(answers) if i != 3)
    finally:
        s.stop()


def _closed_within(sock: socket.socket, seconds: float) -> bytes:
    """What the server sends before it closes the connection (b"" if it only closes it)."""
    sock.settimeout(seconds)
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk


def test_stalled_clients_are_cut_off(lazy_reward):
    import httpx
    s = Server(lazy_reward, header_timeout=0.5, body_timeout=0.5)
    try:
        t = time.monotonic()
        with socket.create_connection(("127.0.0.1", s.port)) as c:  # half a header line, then nothing
            c.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Le")
            assert _closed_within(c, 5) == b"" and time.monotonic() - t < 3
        with socket.create_connection(("127.0.0.1", s.port)) as c:  # headers, half the body, then nothing
            c.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 100\r\n\r\n{\"items\": [")
            answer = _closed_within(c, 5)
            assert answer.startswith(b"HTTP/1.1 408") and b"the body did not arrive within 0.5 s" in answer
        with socket.create_connection(("127.0.0.1", s.port)) as c:  # connects and sends nothing
            assert _closed_within(c, 5) == b""
        assert httpx.get(s.url + "/health").status_code == 200
        assert httpx.post(s.url + "/score", json={"items": [OK]}, timeout=30).status_code == 200
    finally:
        s.stop()


@pytest.mark.parametrize("args,message", [
    (["--max-queue", "-1"], "argument --max-queue: must be >= 1, got -1"),
    (["--timeout", "-5"], "argument --timeout: must be > 0, got -5"),
    (["--max-body-bytes", "0"], "argument --max-body-bytes: must be >= 1, got 0"),
    (["--max-wait-ms", "nan"], "argument --max-wait-ms: must be >= 0, got nan"),
    (["--header-timeout", "inf"], "argument --header-timeout: must be > 0, got inf"),
    (["--port", "99999"], "argument --port: must be in [1, 65535], got 99999"),
    (["--host", "256.0.0.1"], "cannot listen on 256.0.0.1:"),
    (["--weights", "OTHER_SPEC"], "were fitted for a spec with other propositions or classes"),
    (["--weights", "/nowhere/w.json"], "/nowhere/w.json: cannot read the weights"),
    (["--spec", "/nowhere/spec.yaml"], "cannot read the spec"),
])
def test_bad_start_up_options_are_one_error_line(args, message, tmp_path, capsys):
    from rbr_fast.cli import main
    from rbr_fast.reward import RewardWeights
    from rbr_fast.rules import RuleSpec
    if "OTHER_SPEC" in args:  # weights made for another spec
        w = RewardWeights.hand_set(RuleSpec.default())
        w.spec_structure = "0123456789abcdef"
        w.save(tmp_path / "w.json")
        args = [str(tmp_path / "w.json") if a == "OTHER_SPEC" else a for a in args]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = str(s.getsockname()[1])
    assert main(["serve", "--port", free, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rbr-fast serve: error: ") and message in err and "\n" not in err, err


def test_a_taken_port_is_one_error_line(capsys):
    from rbr_fast.cli import main
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert main(["serve", "--port", str(s.getsockname()[1])]) == 2
    assert "cannot listen on 127.0.0.1" in capsys.readouterr().err


def test_limits_are_checked_for_the_python_api_too(lazy_reward):
    from rbr_fast.integrations.server import Limits, create_app
    with pytest.raises(ValueError, match="max_queue must be an integer > 0"):
        create_app(lazy_reward, Limits(max_queue=-1))
