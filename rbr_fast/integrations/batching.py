"""Dynamic batching: pools concurrent reward calls, from threads or coroutines, into grader batches.

A worker thread takes the first waiting item, gathers more until ``max_batch`` items or
``max_wait_ms`` after the first, scores them in one call of ``fn`` and resolves each item's future.
If that call raises, every submission in the batch is scored again alone (``score_isolated``), so a
bad input fails only the caller that sent it. Threads block on ``batcher(item)`` or on the futures
of ``submit``; coroutines ``await batcher.score(items)``, with no thread per waiting caller, so
the number of concurrent callers is not capped by a thread pool.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Hashable, Optional, Sequence

log = logging.getLogger("rbr_fast.batching")


class QueueFull(Exception):
    """The queue holds ``max_queue`` items: retry later."""


class TooLarge(ValueError):
    """A submission with more items than the queue can ever hold: split it."""


def _checked(fn: Callable[[list], Sequence], items: list) -> list:
    results = list(fn(items))
    if len(results) != len(items):
        raise RuntimeError(f"the batch function returned {len(results)} results for {len(items)} items")
    return results


def score_isolated(fn: Callable[[list], Sequence], items: list, groups: Sequence[Hashable]) -> list:
    """``fn(items)``; if that raises, ``fn`` over each group's items alone (a group is one caller's
    submission). One result per item, or the exception of its group's call in its place."""
    try:
        return _checked(fn, items)
    except Exception as e:
        if len(set(groups)) == 1:
            return [e] * len(items)
        log.warning("a batch of %d items failed (%s: %s); scoring its %d submissions alone", len(items),
                    type(e).__name__, e, len(set(groups)))
    rows: dict = {}
    for i, g in enumerate(groups):
        rows.setdefault(g, []).append(i)
    out: list = [None] * len(items)
    for members in rows.values():
        try:
            results = _checked(fn, [items[i] for i in members])
        except Exception as e:
            results = [e] * len(members)
        for i, r in zip(members, results):
            out[i] = r
    return out


class DynamicBatcher:
    """Args:
        fn: scores a list of items, returning one result per item in order (called from one worker
            thread only, so it need not be thread-safe).
        max_batch: most items per call of ``fn``.
        max_wait_ms: how long the first item of a batch waits for company.
        max_queue: most items waiting; ``submit`` raises ``QueueFull`` beyond it and ``TooLarge`` for
            a submission that could never fit (default: unbounded).
    """

    def __init__(self, fn: Callable[[list], Sequence], max_batch: int = 64, max_wait_ms: float = 20.0,
                 max_queue: Optional[int] = None, name: str = "rbr-batcher"):
        if max_batch < 1 or max_wait_ms < 0 or (max_queue is not None and max_queue < 1):
            raise ValueError(f"max_batch and max_queue must be >= 1 and max_wait_ms >= 0, got {max_batch}, "
                             f"{max_queue}, {max_wait_ms}")
        self.fn, self.max_batch, self.max_wait, self.max_queue = fn, max_batch, max_wait_ms / 1e3, max_queue
        self._q: collections.deque = collections.deque()  # (item, future, submission id)
        self._cond = threading.Condition()
        self._closed = False
        self._next_group = 0
        self.sizes: collections.Counter = collections.Counter()  # number of batches of each size so far
        self._worker = threading.Thread(target=self._run, name=name, daemon=True)
        self._worker.start()

    @property
    def depth(self) -> int:
        """Items waiting for a batch."""
        return len(self._q)

    def submit(self, items: Sequence[Any]) -> list[Future]:
        """Queue ``items`` (all or none) as one submission; one future per item."""
        items = list(items)
        with self._cond:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            if self.max_queue is not None:
                if len(items) > self.max_queue:
                    raise TooLarge(f"{len(items)} items are more than the queue holds ({self.max_queue}); "
                                   "send them in smaller requests")
                if len(self._q) + len(items) > self.max_queue:
                    raise QueueFull(f"the queue is full ({len(self._q)} of {self.max_queue} items)")
            self._next_group += 1
            futures = [Future() for _ in items]
            self._q.extend((it, f, self._next_group) for it, f in zip(items, futures))
            self._cond.notify()
        return futures

    def __call__(self, item: Any, timeout: Optional[float] = None) -> Any:
        """Score one item, blocking this thread; concurrent calls share batches."""
        return self.submit([item])[0].result(timeout)

    async def score(self, items: Sequence[Any]) -> list:
        """Score ``items`` without blocking the event loop. Cancelling the awaiting task (e.g. a
        timeout) drops the items that are not in a batch yet."""
        return list(await asyncio.gather(*(asyncio.wrap_future(f) for f in self.submit(items))))

    def close(self, timeout: Optional[float] = None) -> None:
        """Refuse new items, score every queued one, then stop the worker."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._worker.join(timeout)

    def _take(self) -> Optional[list]:
        with self._cond:
            while not self._q and not self._closed:
                self._cond.wait()
            if not self._q:
                return None  # closed and drained
            batch = [self._q.popleft()]
            end = time.monotonic() + self.max_wait
            while len(batch) < self.max_batch:
                if self._q:
                    batch.append(self._q.popleft())
                    continue
                left = end - time.monotonic()
                if left <= 0 or self._closed:
                    break
                self._cond.wait(left)
        return batch

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            live = [(it, f, g) for it, f, g in batch if f.set_running_or_notify_cancel()]  # skip cancelled
            if not live:
                continue
            self.sizes[len(live)] += 1
            try:
                results = score_isolated(self.fn, [it for it, _, _ in live], [g for _, _, g in live])
            except BaseException as e:  # never leave a caller waiting
                results = [e] * len(live)
            for (_, f, _), r in zip(live, results):
                if isinstance(r, BaseException):
                    f.set_exception(r)
                else:
                    f.set_result(r)
