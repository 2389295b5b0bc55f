"""Micro-batching: pools concurrent one-sample reward calls into grader batches.

Callers (threads) ``submit`` one item and block on its future; a worker thread takes the first
waiting item, gathers more until ``max_batch`` items or ``max_wait_ms`` after the first, scores the
batch in one call and hands every caller its own result (or the batch's exception).
"""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Sequence


class MicroBatcher:
    """Args:
        fn: scores a list of items, returning one result per item in order.
        max_batch: most items per call of ``fn``. max_wait_ms: how long the first item of a batch
            waits for company.
    """

    def __init__(self, fn: Callable[[Sequence[Any]], Sequence[Any]], max_batch: int = 64, max_wait_ms: float = 20.0):
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError(f"max_batch must be >= 1 and max_wait_ms >= 0, got {max_batch}, {max_wait_ms}")
        self.fn, self.max_batch, self.max_wait = fn, max_batch, max_wait_ms / 1e3
        self._q: "queue.Queue[tuple[Any, Future]]" = queue.Queue()
        self.batches: list[int] = []  # sizes of the batches run so far
        self._worker = threading.Thread(target=self._run, name="rbr-microbatcher", daemon=True)
        self._worker.start()

    def submit(self, item: Any) -> Future:
        fut: Future = Future()
        self._q.put((item, fut))
        return fut

    def __call__(self, item: Any, timeout: float | None = None) -> Any:
        """Score one item (blocking); concurrent calls share batches."""
        return self.submit(item).result(timeout)

    def _run(self) -> None:
        while True:
            batch = [self._q.get()]
            end = time.monotonic() + self.max_wait
            while len(batch) < self.max_batch:
                left = end - time.monotonic()
                try:
                    batch.append(self._q.get(timeout=left) if left > 0 else self._q.get_nowait())
                except queue.Empty:
                    break
            items, futures = zip(*batch)
            self.batches.append(len(batch))
            try:
                results = list(self.fn(list(items)))
                if len(results) != len(items):
                    raise RuntimeError(f"batch function returned {len(results)} results for {len(items)} items")
            except BaseException as e:  # every caller of this batch sees the failure
                for f in futures:
                    f.set_exception(e)
                continue
            for f, r in zip(futures, results):
                f.set_result(r)
