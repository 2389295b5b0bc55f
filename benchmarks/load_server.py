"""Load test of the reward server on loopback with the tiny model: C concurrent clients x R requests
each (one completion per request, as verl-style callers send), against the batching server and the
same server with batching off (max_batch=1). Checks that every request is answered exactly once
with the reward of its own input, no 5xx; prints p50/p99 latency, throughput and the ratio.

It also times the grader alone, in this process, on the same kind of items (one call of 64 items vs
64 calls of one), and the HTTP layer alone (the same load against a constant reward). Batching
saves only what a grader call costs beyond its items' own compute (and the per-call hand-off to
the worker thread); the per-item compute and the per-request HTTP cost stay, which bounds the ratio.

    .venv/bin/python benchmarks/load_server.py [--clients 64] [--requests 50]
"""
import argparse
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def run(url: str, clients: int, requests: int, want: dict) -> dict:
    import httpx
    lat, codes, wrong = [], [], []
    lock = threading.Lock()

    def client(c):
        with httpx.Client(timeout=300) as h:
            for r in range(requests):
                key = f"Question {c}-{r}?"
                t = time.perf_counter()
                resp = h.post(url + "/score", json={"items": [{"prompt": key, "completion": want[key][0],
                                                               "response_type": "comply"}]})
                with lock:
                    lat.append(time.perf_counter() - t)
                    codes.append(resp.status_code)
                    if resp.status_code == 200 and abs(resp.json()["rewards"][0] - want[key][1]) > 2e-4:
                        wrong.append(key)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    wall = time.perf_counter() - t0
    lat.sort()
    return {"requests": len(codes), "ok": codes.count(200), "5xx": sum(c >= 500 for c in codes), "wrong": len(wrong),
            "p50_ms": 1e3 * statistics.median(lat), "p99_ms": 1e3 * lat[int(0.99 * (len(lat) - 1))],
            "req_per_s": len(codes) / wall}


def grader_alone(rbr, prompts: list, replies: list) -> dict:
    """ms per item of ``rbr``'s scoring in calls of ``len(prompts)`` items and of one item (best of 3)."""
    out = {}
    for size in (len(prompts), 1):
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            for i in range(0, len(prompts), size):
                rbr.reward.score(prompts[i:i + size], replies[i:i + size], ["comply"] * len(prompts[i:i + size]))
            best = min(best, time.perf_counter() - t)
        out[size] = 1e3 * best / len(prompts)
    return out


class Constant:
    """The reward with grading replaced by a constant: what the HTTP layer alone (server + clients in
    this process) costs per request."""

    def __init__(self, rbr, value: float = 0.0):
        self.spec, self.value = rbr.spec, value

    def details(self, items):
        return [{"reward": self.value, "propositions": {}} for _ in items]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--requests", type=int, default=50)
    a = p.parse_args(argv)
    from live_server import Server

    from rbr_fast.bench import tiny_lm
    from rbr_fast.grading import Grader
    from rbr_fast.integrations.lazy_reward import LazyReward
    from rbr_fast.reward import RuleBasedReward
    rbr = LazyReward(RuleBasedReward(Grader(tiny_lm.model(), tiny_lm.tokenizer(), progress=False)))
    keys = [f"Question {c}-{r}?" for c in range(a.clients) for r in range(a.requests)]
    replies = [f"Answer {i}." for i in range(len(keys))]
    scores = rbr.reward.score(keys, replies, ["comply"] * len(keys))
    per_item = grader_alone(rbr, keys[:64], replies[:64])
    print(f"grader alone: {per_item[64]:.1f} ms/item in calls of 64, {per_item[1]:.1f} ms/item in calls of 1 "
          f"({per_item[1] / per_item[64]:.2f}x)", flush=True)
    want = {k: (rep, s) for k, rep, s in zip(keys, replies, scores)}
    results = {}
    runs = (("batched", rbr, {"max_batch": 64, "max_wait_ms": 10}, want), ("unbatched", rbr, {"max_batch": 1}, want),
            ("http only", Constant(rbr), {"max_batch": 64, "max_wait_ms": 10}, {k: (r, 0.0) for k, r in zip(keys, replies)}))
    for name, reward, kw, expect in runs:
        server = Server(reward, **kw)
        try:
            results[name] = run(server.url, a.clients, a.requests, expect)
        finally:
            server.stop()
        print(name, results[name], flush=True)
    ratio = results["batched"]["req_per_s"] / results["unbatched"]["req_per_s"]
    print(f"\n{a.clients} clients x {a.requests} requests: batched {results['batched']['req_per_s']:.1f} req/s "
          f"(p50 {results['batched']['p50_ms']:.0f} ms, p99 {results['batched']['p99_ms']:.0f} ms), unbatched "
          f"{results['unbatched']['req_per_s']:.1f} req/s (p50 {results['unbatched']['p50_ms']:.0f} ms, p99 "
          f"{results['unbatched']['p99_ms']:.0f} ms): {ratio:.1f}x ({'PASS' if ratio >= 4 else 'FAIL'}: target 4x)")
    http = 1e3 / results["http only"]["req_per_s"]
    print(f"HTTP layer alone (constant reward): {http:.1f} ms/request; with the grader's per-item times above, "
          f"batching can reach about ({per_item[1]:.1f} + {http:.1f}) / ({per_item[64]:.1f} + {http:.1f}) = "
          f"{(per_item[1] + http) / (per_item[64] + http):.2f}x plus the per-call hand-off it also shares")
    bad = any(r["ok"] != r["requests"] or r["wrong"] or r["5xx"] for r in results.values())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
