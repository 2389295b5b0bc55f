"""An async client of a running ``rbr-fast serve`` (or its Ray Serve deployment): what the adapters
use instead of a grader of their own when several trainer processes should share one.

A batch is sent as as many ``POST /score`` requests as keep each body under the server's limit
(``max_body_bytes``, the server's ``--max-body-bytes``, default 4 MiB) and each request under
``max_items`` items (the server answers 413 to a request larger than its queue), concurrently. A
request answered 503 (queue full) or lost to a connection error (server restarting, connection
dropped) is sent again after 0.25 s, 0.5 s, 1 s, ... (at most 8 s) until ``retry_s`` seconds after
the call began; then, or on any other answer but 200, the call raises ``RuntimeError`` in one line.

Plain (blocking) callers, such as OpenRLHF's reward threads and verl's ``remote``-manager actors, go
through ``run_sync``: one event loop per process on a daemon thread, with one pooled HTTP client,
instead of a new loop and a new connection per sample.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
from typing import Any, Awaitable, NamedTuple, Optional, Sequence, TypeVar

MAX_BODY_BYTES = 4 << 20  # the server's default --max-body-bytes
MAX_ITEMS = 1024  # per request: well under the server's default --max-queue (4096)
RETRY_S = 60.0
_ENVELOPE = len(b'{"items": [], "details": true}')


class Scored(NamedTuple):
    details: list[dict]  # one per item, in order
    response_types: list[str]  # the server spec's response type names


def _placeholder(obj: Any) -> str:
    """What the grader reads for a value JSON cannot carry (an image in a list-of-parts content):
    its part type is kept beside it, so the transcript shows ``[image]`` as it does locally."""
    return f"<{type(obj).__name__}>"


def _bodies(items: Sequence[tuple], max_body_bytes: int, max_items: int) -> list[tuple[int, bytes]]:
    """(index of the first item, body) of each request, every body at most ``max_body_bytes``."""
    out, chunk, size, first = [], [], _ENVELOPE, 0
    for i, (p, c, t, *label) in enumerate(items):
        item = {"prompt": p, "completion": c, "response_type": t, **({"label": label[0]} if label else {})}
        enc = json.dumps(item, default=_placeholder).encode()
        if _ENVELOPE + len(enc) > max_body_bytes:
            raise ValueError(f"item {i} is {len(enc)} bytes of JSON, over the server's body limit of {max_body_bytes} "
                             "bytes: raise rbr-fast serve --max-body-bytes (and max_body_bytes here)")
        if chunk and (size + len(enc) + 2 > max_body_bytes or len(chunk) == max_items):
            out.append((first, chunk))
            chunk, size, first = [], _ENVELOPE, i
        chunk.append(enc)
        size += len(enc) + 2  # ", " between items
    if chunk:
        out.append((first, chunk))
    return [(f, b'{"items": [' + b", ".join(c) + b'], "details": true}') for f, c in out]


class _Background:
    """An event loop running on a daemon thread of this process, and its pooled HTTP client."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.http = None  # made on the loop, by its first request
        threading.Thread(target=self.loop.run_forever, name="rbr-fast-client", daemon=True).start()


_background: Optional[_Background] = None
_background_lock = threading.Lock()
T = TypeVar("T")


def _forget_in_child() -> None:
    """A forked child has no loop thread, and the lock may have been held by a thread it does not have."""
    global _background, _background_lock
    _background, _background_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


def run_sync(coro: Awaitable[T]) -> T:
    """Run ``coro`` (one of this module's calls) to its end from plain code, on the process's client
    loop (started by the first call; again in a forked child), blocking the calling thread only.
    Thread-safe. Not from inside a running event loop: it would block that loop (await the call there)."""
    global _background
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        coro.close()
        raise RuntimeError("run_sync was called inside a running event loop: await the call instead")
    with _background_lock:
        if _background is None:
            _background = _Background()
        loop = _background.loop
    return asyncio.run_coroutine_threadsafe(coro, loop).result()


@contextlib.asynccontextmanager
async def _client():
    """The background loop's pooled client on that loop, else a client for this call."""
    import httpx
    bg = _background
    if bg is not None and asyncio.get_running_loop() is bg.loop:
        if bg.http is None:
            bg.http = httpx.AsyncClient(limits=httpx.Limits(max_connections=64))
        yield bg.http
    else:
        async with httpx.AsyncClient() as http:
            yield http


async def _post(http, url: str, body: bytes, headers: dict, end: float, timeout_s: float) -> dict:
    import httpx
    tries, wait = 0, 0.25
    while True:
        tries += 1
        try:
            r = await http.post(url, content=body, headers=headers, timeout=timeout_s)
            if r.status_code == 200:
                return r.json()
            if r.status_code != 503:
                try:
                    detail = r.json().get("detail", r.text)
                except ValueError:
                    detail = r.text
                raise RuntimeError(f"{url} answered {r.status_code}: {detail}")
            last = f"503: {r.text[:200]}"
        except httpx.TransportError as e:
            last = f"{type(e).__name__}: {e}"
        left = end - time.monotonic()
        if left <= 0:
            raise RuntimeError(f"{url}: no answer after {tries} tries ({last}); is rbr-fast serve running and "
                               "not overloaded? (retry_s sets how long to retry)")
        await asyncio.sleep(min(wait, left))
        wait = min(wait * 2, 8.0)


def _headers(token: Optional[str]) -> dict:
    return {"content-type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}


async def get_reward_remote(url: str, payload: dict, token: Optional[str] = None, timeout_s: float = 300.0,
                            retry_s: float = RETRY_S) -> dict:
    """The server's answer to an OpenRLHF ``POST /get_reward`` body (``{"query", "prompts", "labels"}``),
    one request retried as ``score_remote``'s are."""
    body = json.dumps(payload).encode()
    async with _client() as http:
        return await _post(http, url.rstrip("/") + "/get_reward", body, _headers(token), time.monotonic() + retry_s,
                           timeout_s)


async def score_remote(url: str, items: Sequence[tuple], token: Optional[str] = None, timeout_s: float = 300.0,
                       retry_s: float = RETRY_S, max_body_bytes: int = MAX_BODY_BYTES,
                       max_items: int = MAX_ITEMS) -> Scored:
    """``details`` of (prompt, completion, response type or None[, label]) items from the server at ``url``
    (its ``POST /score``), split and retried as the module docstring says, and the server spec's
    response type names. ``timeout_s``: for each HTTP request; ``retry_s``: how long after the call
    began a 503 or a connection error is still retried."""
    if not items:
        return Scored([], [])
    bodies = _bodies(items, max_body_bytes, max_items)
    headers, end = _headers(token), time.monotonic() + retry_s
    async with _client() as http:
        tasks = [asyncio.ensure_future(_post(http, url.rstrip("/") + "/score", b, headers, end, timeout_s))
                 for _, b in bodies]
        try:
            answers = await asyncio.gather(*tasks)
        except BaseException:  # the other requests stop too (on a shared client they would retry on)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
    details = [d for a in answers for d in a["details"]]
    if len(details) != len(items):
        raise RuntimeError(f"{url}/score answered {len(details)} details for {len(items)} items")
    return Scored(details, answers[0]["response_types"])
