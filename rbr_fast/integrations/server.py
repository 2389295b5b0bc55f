"""``rbr-fast serve``: the RBR reward over HTTP (FastAPI + uvicorn), with dynamic batching.

Endpoints: ``POST /get_reward`` (OpenRLHF's remote reward protocol: ``{"query", "prompts",
"labels"}`` -> ``{"rewards", "scores", "extra_logs"}``), ``POST /score`` (``{"items": [{"prompt",
"completion", "response_type"?}], "details": bool}``), ``GET /health``, ``GET /metrics``
(Prometheus text).

Every item of every request joins one bounded queue; a worker takes up to ``max_batch`` items
(waiting at most ``max_wait_ms`` for the batch to fill), scores them in one grader call in a
thread, and answers each request with its own items' results. A full queue answers 503 with
``Retry-After``; bodies over ``max_body_bytes`` 413 (by Content-Length, or counted as a chunked body
arrives); malformed JSON or wrong types 422 naming the
field; a request not answered within ``request_timeout_s`` 504. With a token, requests need
``Authorization: Bearer <token>`` (compared in constant time), else 401. On shutdown the queue is
drained before the worker stops.
"""

import asyncio
import hmac
import time
from collections import Counter
from typing import Any, Optional, Union

from .openrlhf import query_items
from .trl import RBRReward, proposition_means

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Full(Exception):
    pass


class _Batcher:
    """The asyncio side of dynamic batching (one event loop; scoring runs in a worker thread)."""

    def __init__(self, reward: RBRReward, max_batch: int, max_wait_ms: float, max_queue: int):
        self.reward, self.max_batch, self.max_wait, self.max_queue = reward, max_batch, max_wait_ms / 1e3, max_queue
        self.queue: asyncio.Queue = asyncio.Queue()
        self.batch_sizes: Counter = Counter()
        self.task: Optional[asyncio.Task] = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Drain: wait until every queued item is scored, then stop the worker."""
        await self.queue.join()
        if self.task:
            self.task.cancel()

    def submit(self, items: list[tuple[Any, str, Optional[str]]]) -> list[asyncio.Future]:
        if self.queue.qsize() + len(items) > self.max_queue:
            raise Full
        loop = asyncio.get_running_loop()
        futs = []
        for it in items:
            f = loop.create_future()
            self.queue.put_nowait((it, f))
            futs.append(f)
        return futs

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            end = loop.time() + self.max_wait
            while len(batch) < self.max_batch:
                left = end - loop.time()
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), left) if left > 0 else self.queue.get_nowait())
                except (asyncio.TimeoutError, asyncio.QueueEmpty):
                    break
            live = [(it, f) for it, f in batch if not f.cancelled()]  # callers that gave up are skipped
            self.batch_sizes[len(live)] += 1
            try:
                if live:
                    results = await asyncio.to_thread(self.reward.score_items, [it for it, _ in live])
                    for (_, f), r in zip(live, results):
                        if not f.done():
                            f.set_result(r)
            except Exception as e:  # every caller of this batch sees the failure
                for _, f in live:
                    if not f.done():
                        f.set_exception(e)
            finally:
                for _ in batch:
                    self.queue.task_done()


class _BodyLimit:
    """ASGI middleware: a body streamed without Content-Length (chunked) is counted as it arrives and
    refused with 413 once it passes the limit, before it is all in memory."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    from starlette.exceptions import HTTPException
                    raise HTTPException(413, f"body over {self.limit} bytes")
            return msg
        await self.app(scope, counted, send)


def create_app(reward: RBRReward, *, max_batch: int = 64, max_wait_ms: float = 20.0, max_queue: int = 4096,
               max_body_bytes: int = 4 << 20, request_timeout_s: float = 120.0, token: Optional[str] = None):
    """The FastAPI app (see the module docstring); ``max_batch=1`` turns batching off."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, PlainTextResponse
    from pydantic import BaseModel, ConfigDict, Field

    Prompt = Union[str, list[dict[str, str]]]

    class GetReward(BaseModel):
        model_config = ConfigDict(extra="ignore")
        query: list[str] = Field(min_length=1)
        prompts: Optional[list[str]] = None
        labels: Optional[list[Any]] = None

    class Item(BaseModel):
        prompt: Prompt
        completion: Prompt
        response_type: Optional[str] = None

    class Score(BaseModel):
        items: list[Item] = Field(min_length=1)
        details: bool = False

    state = {"batcher": None}
    requests: Counter = Counter()
    latency = [0] * (len(LATENCY_BUCKETS) + 1)
    latency_sum = [0.0]

    @asynccontextmanager
    async def lifespan(app):
        b = _Batcher(reward, max_batch, max_wait_ms, max_queue)
        b.start()
        state["batcher"] = b
        yield
        await b.stop()

    app = FastAPI(title="rbr_fast reward server", lifespan=lifespan)
    app.add_middleware(_BodyLimit, limit=max_body_bytes)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        t0 = time.perf_counter()
        if token is not None and request.url.path != "/health":
            got = request.headers.get("authorization", "")
            if not hmac.compare_digest(got.encode(), f"Bearer {token}".encode()):
                response = JSONResponse({"detail": "missing or wrong bearer token"}, status_code=401)
                requests[(request.url.path, 401)] += 1
                return response
        size = request.headers.get("content-length")
        if size is not None and (not size.isdigit() or int(size) > max_body_bytes):
            requests[(request.url.path, 413)] += 1
            return JSONResponse({"detail": f"body over {max_body_bytes} bytes"}, status_code=413)
        response = await call_next(request)
        requests[(request.url.path, response.status_code)] += 1
        dt = time.perf_counter() - t0
        latency[next((i for i, b in enumerate(LATENCY_BUCKETS) if dt <= b), len(LATENCY_BUCKETS))] += 1
        latency_sum[0] += dt
        return response

    async def run(items):
        b = state["batcher"]
        try:
            futs = b.submit(items)
        except Full:
            return None, JSONResponse({"detail": "queue full, retry later"}, status_code=503,
                                      headers={"Retry-After": "1"})
        try:
            return await asyncio.wait_for(asyncio.gather(*futs), request_timeout_s), None
        except asyncio.TimeoutError:
            for f in futs:
                f.cancel()
            return None, JSONResponse({"detail": f"not scored within {request_timeout_s} s"}, status_code=504)
        except Exception as e:
            return None, JSONResponse({"detail": f"scoring failed: {type(e).__name__}: {e}"}, status_code=500)

    @app.post("/get_reward")
    async def get_reward(body: GetReward):
        prompts = body.prompts if body.prompts is not None else [""] * len(body.query)
        if len(prompts) != len(body.query) or (body.labels is not None and len(body.labels) != len(body.query)):
            return JSONResponse({"detail": "query, prompts and labels must have the same length"}, status_code=422)
        details, err = await run(query_items(body.query, prompts, body.labels, reward.reward.spec))
        if err is not None:
            return err
        rewards = [d["reward"] for d in details]
        return {"rewards": rewards, "scores": rewards, "extra_logs": proposition_means(details)}

    @app.post("/score")
    async def score(body: Score):
        spec = reward.reward.spec
        for i, it in enumerate(body.items):
            if it.response_type is not None and not _is_type(spec, it.response_type):
                return JSONResponse({"detail": f"items[{i}].response_type: unknown {it.response_type!r}"},
                                    status_code=422)
        details, err = await run([(it.prompt, it.completion, it.response_type) for it in body.items])
        if err is not None:
            return err
        out = {"rewards": [d["reward"] for d in details]}
        if body.details:
            out["details"] = details
        return out

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics():
        b = state["batcher"]
        lines = ["# TYPE rbr_requests_total counter"]
        lines += [f'rbr_requests_total{{path="{p}",code="{c}"}} {n}' for (p, c), n in sorted(requests.items())]
        lines += ["# TYPE rbr_queue_depth gauge", f"rbr_queue_depth {b.queue.qsize() if b else 0}",
                  "# TYPE rbr_batch_size_count counter"]
        lines += [f'rbr_batch_size_count{{size="{s}"}} {n}' for s, n in sorted(b.batch_sizes.items())] if b else []
        lines.append("# TYPE rbr_request_latency_seconds histogram")
        acc = 0
        for bound, n in zip((*LATENCY_BUCKETS, "+Inf"), latency):
            acc += n
            lines.append(f'rbr_request_latency_seconds_bucket{{le="{bound}"}} {acc}')
        lines += [f"rbr_request_latency_seconds_sum {latency_sum[0]}", f"rbr_request_latency_seconds_count {acc}"]
        return PlainTextResponse("\n".join(lines) + "\n")

    return app


def _is_type(spec, name: str) -> bool:
    try:
        spec.response_type(name)
        return True
    except KeyError:
        return False


def serve(reward: RBRReward, host: str = "127.0.0.1", port: int = 8000, **kwargs) -> None:
    """Run the server until interrupted (graceful: queued requests are answered first)."""
    import uvicorn
    uvicorn.run(create_app(reward, **kwargs), host=host, port=port, log_level="info")
