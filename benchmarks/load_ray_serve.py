"""Load test of the Ray Serve deployment on loopback with the tiny model: C concurrent clients x R
requests each (one completion per request), against 1 and then 2 replicas (reserving no CPU, so
both fit on a small machine). Every request must be answered once, with the reward of its own
input (checked against direct scoring), no 5xx; prints throughput and p50/p99 latency.

    .venv/bin/python benchmarks/load_ray_serve.py [--clients 64] [--requests 20] [--replicas 1,2]
"""
import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--requests", type=int, default=20)
    p.add_argument("--replicas", default="1,2", help="comma-separated replica counts to measure")
    a = p.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from live_server import free_port
    from load_server import run
    from ray import serve

    import rbr_fast
    from rbr_fast.bench import tiny_lm
    from rbr_fast.integrations import ray_serve
    from rbr_fast.integrations.lazy_reward import LazyReward
    model_dir = tempfile.mkdtemp(prefix="rbr_tiny_grader_")
    tiny_lm.model().save_pretrained(model_dir)
    tiny_lm.tokenizer().save_pretrained(model_dir)
    reward = LazyReward(model=model_dir, dtype="float32", device="cpu")
    keys = [f"Question {c}-{r}?" for c in range(a.clients) for r in range(a.requests)]
    replies = [f"Answer {i}." for i in range(len(keys))]
    want = dict(zip(keys, zip(replies, reward.reward.score(keys, replies, ["comply"] * len(keys)))))
    ray.init(include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(Path(rbr_fast.__file__).parents[1])}})
    port, results = free_port(), {}
    try:
        for n in (int(x) for x in a.replicas.split(",")):
            ray_serve.start(reward, replicas=n, port=port, max_batch=64, max_wait_ms=10)
            results[n] = run(f"http://127.0.0.1:{port}", a.clients, a.requests, want)
            print(f"{n} replica(s): {results[n]}", flush=True)
            serve.delete("rbr_fast")
    finally:
        serve.shutdown()
        ray.shutdown()
    summary = "; ".join(f"{n} replica(s) {r['req_per_s']:.1f} req/s (p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} "
                        f"ms), {r['ok'] - r['wrong']}/{r['requests']} answered correctly" for n, r in results.items())
    print(f"\n{a.clients} clients x {a.requests} requests on Ray Serve (tiny model, {os.cpu_count()} CPUs): {summary}")
    return 1 if any(r["ok"] != r["requests"] or r["wrong"] or r["5xx"] for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
