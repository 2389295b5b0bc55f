"""How full the grader batches of the verl adapter get under verl's own concurrency, tiny model.

verl's reward loop calls the reward once per sample: a coroutine function is awaited with every
sample of a worker in flight at once; a plain function runs in the event loop's default thread pool
(at most 32 threads). C concurrent callers each score R samples one after another, through the
adapter file loaded by path and wrapped as verl does (tests/test_integrations_verl.py), first with
the async ``compute_score``, then with ``compute_score_sync`` in a 32-thread pool. Prints the
average grader batch (target for the async path: >= 48 of ``max_batch`` 64), throughput, and
checks every score against direct ``RuleBasedReward.score`` calls on the same items.

    .venv/bin/python benchmarks/verl_batching.py [--callers 256] [--rounds 2]
"""
import argparse
import asyncio
import inspect
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def run(fn, callers: int, rounds: int, threads: int) -> tuple[list, float]:
    """(scores in caller-major order, seconds) of ``callers`` concurrent callers x ``rounds`` samples."""
    from test_integrations_verl import samples

    async def caller(c):
        loop = asyncio.get_running_loop()
        out = []
        for s in samples(rounds, seed=c):
            kw = dict(data_source="rbr", solution_str=s["response"], ground_truth=s["ground_truth"],
                      extra_info=s["extra_info"])
            out.append(await fn(**kw) if inspect.iscoroutinefunction(fn)
                       else await loop.run_in_executor(None, lambda: fn(**kw)))
        return [o["score"] for o in out]

    async def main():
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(threads))
        return await asyncio.gather(*(caller(c) for c in range(callers)))
    t = time.perf_counter()
    scores = asyncio.run(main())
    return [x for row in scores for x in row], time.perf_counter() - t


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--callers", type=int, default=256)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--max-batch", type=int, default=64)
    a = p.parse_args(argv)
    from test_integrations_verl import load_like_verl, samples, wrap_like_verl

    from rbr_fast.bench import tiny_lm
    from rbr_fast.integrations.pool import pooled
    model_dir = tempfile.mkdtemp(prefix="rbr_tiny_grader_")
    tiny_lm.model().save_pretrained(model_dir)
    tiny_lm.tokenizer().save_pretrained(model_dir)
    module = load_like_verl()
    kwargs = {"model": model_dir, "dtype": "float32", "device": "cpu", "max_batch": a.max_batch, "max_wait_ms": 20.0}
    pool = pooled(**kwargs)
    items = [s for c in range(a.callers) for s in samples(a.rounds, seed=c)]
    want = pool.reward.reward.score([s["prompt"] for s in items], [s["response"] for s in items],
                                    [s["type"] for s in items])
    bad = False
    for name, fn_name in (("async compute_score", "compute_score"),
                          ("sync compute_score_sync in 32 threads", "compute_score_sync")):
        pool.batcher.sizes.clear()
        got, wall = run(wrap_like_verl(getattr(module, fn_name), kwargs), a.callers, a.rounds, threads=32)
        sizes = pool.batcher.sizes
        mean = sum(s * n for s, n in sizes.items()) / sum(sizes.values())
        wrong = sum(abs(g - w) > 2e-4 for g, w in zip(got, want))
        bad |= wrong > 0
        print(f"{name}: {a.callers} callers x {a.rounds} samples in {wall:.1f} s ({len(got) / wall:.1f} samples/s); "
              f"{sum(sizes.values())} grader calls, average batch {mean:.1f} (largest {max(sizes)}); "
              f"{wrong} scores differ from direct scoring", flush=True)
        if fn_name == "compute_score":
            bad |= mean < 48
            print(f"  target: average batch >= 48 under {a.callers} concurrent callers: "
                  f"{'PASS' if mean >= 48 else 'FAIL'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
