"""The one dynamic batcher: threads and coroutines share batches, each caller gets its own result,
a failing batch is retried submission by submission, a bounded queue, cancellation, draining."""
import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from rbr_fast.integrations.batching import DynamicBatcher, QueueFull, TooLarge


def _square_all(items):
    return [x * x for x in items]


def test_threads_share_batches_and_get_their_own_results():
    seen = []

    def square_all(items):
        seen.append(threading.current_thread().name)
        return _square_all(items)
    b = DynamicBatcher(square_all, max_batch=16, max_wait_ms=50)
    with ThreadPoolExecutor(32) as pool:
        out = list(pool.map(b, range(200)))
    assert out == [x * x for x in range(200)]
    assert sum(s * n for s, n in b.sizes.items()) == 200 and 1 < max(b.sizes) <= 16
    assert set(seen) == {"rbr-batcher"}  # fn runs on the worker thread only
    b.close()


def test_coroutines_are_not_capped_by_a_thread_pool():
    b = DynamicBatcher(_square_all, max_batch=64, max_wait_ms=50)

    async def main():
        return await asyncio.gather(*(b.score([i]) for i in range(256)))
    assert asyncio.run(main()) == [[i * i] for i in range(256)]
    assert b.sizes == {64: 4}
    b.close()


def test_a_failing_batch_is_retried_per_submission():
    calls = []

    def picky(items):
        calls.append(list(items))
        if "bad" in items:
            raise ValueError("cannot score 'bad'")
        return [x.upper() for x in items]
    b = DynamicBatcher(picky, max_batch=8, max_wait_ms=100)
    futs = [b.submit(["a", "b"]), b.submit(["bad"]), b.submit(["c"])]
    assert [f.result(5) for f in futs[0]] == ["A", "B"] and futs[2][0].result(5) == "C"
    with pytest.raises(ValueError, match="cannot score 'bad'"):
        futs[1][0].result(5)
    assert calls[0] == ["a", "b", "bad", "c"] and sorted(calls[1:]) == [["a", "b"], ["bad"], ["c"]]
    b.close()


def test_wrong_result_count_fails_its_callers():
    b = DynamicBatcher(lambda items: [1], max_batch=4, max_wait_ms=20)
    with pytest.raises(RuntimeError, match="returned 1 results for 2 items"):
        [f.result(5) for f in b.submit([1, 2])]
    b.close()


def test_bounded_queue_and_bad_limits():
    gate = threading.Event()
    b = DynamicBatcher(lambda items: gate.wait() and _square_all(items), max_batch=1, max_wait_ms=0, max_queue=3)
    first = b.submit([1])
    time.sleep(0.1)  # the worker holds item 1; the queue is empty again
    waiting = b.submit([2, 3, 4])
    with pytest.raises(QueueFull):
        b.submit([5])
    with pytest.raises(TooLarge, match="4 items are more than the queue holds"):
        b.submit([5, 6, 7, 8])
    gate.set()
    assert [f.result(5) for f in first + waiting] == [1, 4, 9, 16]
    b.close()
    for bad in ({"max_batch": 0}, {"max_wait_ms": -1}, {"max_queue": 0}):
        with pytest.raises(ValueError):
            DynamicBatcher(_square_all, **bad)


def test_cancelled_items_are_skipped_and_close_drains():
    gate = threading.Event()
    scored = []

    def slow(items):
        gate.wait()
        scored.extend(items)
        return items
    b = DynamicBatcher(slow, max_batch=1, max_wait_ms=0)
    first = b.submit(["first"])
    time.sleep(0.1)
    dropped, kept = b.submit(["dropped"]), b.submit(["kept"])
    assert dropped[0].cancel()
    gate.set()
    b.close()  # returns once the queue is drained
    assert scored == ["first", "kept"] and kept[0].result(0) == "kept" and first[0].result(0) == "first"
    with pytest.raises(RuntimeError, match="closed"):
        b.submit(["late"])
