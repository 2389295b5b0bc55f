"""``rbr-fast serve``: the RBR reward over HTTP (FastAPI + uvicorn), with dynamic batching.

Endpoints: ``POST /score`` and ``POST /get_reward`` (see ``protocol``), ``GET /health``, ``GET
/metrics`` (Prometheus, from ``prometheus_client``: requests by path and code, latency, queue
depth, grader batch sizes).

Each request's items are checked first (a malformed item answers 422 naming it, and never joins
the queue), then join the ``DynamicBatcher`` shared by all requests; a grader call that still fails
is retried submission by submission, so only the request at fault gets its 500. A full queue
answers 503 with ``Retry-After``, a request with more items than the queue can ever hold 413,
bodies over ``max_body_bytes`` 413 (by Content-Length, or counted as a chunked body arrives), a
request not answered within ``timeout`` seconds 504. Stalled clients are cut off: a request's
headers must arrive within ``header_timeout`` seconds (uvicorn has no such limit; see
``header_timeout_protocol``) and its body within ``body_timeout`` after them (else 408 and the connection
closes). With a token, requests but ``/health`` need ``Authorization: Bearer <token>`` or
``?token=<token>`` (OpenRLHF's client sends no headers), else 401. On shutdown every accepted
request, queued ones included, is answered before the worker stops.
"""
import asyncio
import logging
import math
import socket
import threading
import time
from typing import NamedTuple, Optional
from urllib.parse import parse_qs

from ..errors import UserError
from . import protocol
from .batching import DynamicBatcher, QueueFull, TooLarge
from .chat_parse import tokenizer_template
from .lazy_reward import LazyReward

log = logging.getLogger("rbr_fast.server")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
PATHS = ("/score", "/get_reward", "/health", "/metrics")
CLOSE = {"connection": "close"}


class Limits(NamedTuple):
    """The server's limits; field names are the ``rbr-fast serve`` options (``--max-queue``, ...)."""
    max_batch: int = 64  # items per grader call (1: no batching)
    max_wait_ms: float = 20.0  # how long a batch's first item waits for company
    max_queue: int = 4096  # items waiting before 503
    max_body_bytes: int = 4 << 20
    timeout: float = 120.0  # seconds to answer a request before 504
    header_timeout: float = 10.0  # seconds for a request's headers to arrive
    body_timeout: float = 30.0  # seconds for its body to arrive after them

    def check(self, as_options: bool = False) -> "Limits":
        """Raises ``ValueError`` naming the first bad limit (as ``--max-queue`` when ``as_options``)."""
        for name, value in self._asdict().items():
            integer = isinstance(self._field_defaults[name], int)
            may_be_0 = name == "max_wait_ms"
            if (isinstance(value, bool) or not isinstance(value, int if integer else (int, float))
                    or not math.isfinite(value) or value < 0 or (value == 0 and not may_be_0)):
                shown = "--" + name.replace("_", "-") if as_options else name
                raise ValueError(f"{shown} must be {'an integer' if integer else 'a number'} "
                                 f"{'>= 0' if may_be_0 else '> 0'}, got {value!r}")
        return self


class _Guard:
    """ASGI middleware in front of the routes: the token check, the body (size limit and deadline,
    read here once and handed on), and the request metrics."""

    def __init__(self, app, limits: Limits, token: Optional[str], metrics):
        self.app, self.limits, self.token, self.metrics = app, limits, token, metrics
        self.active, self.last = 0, time.monotonic()  # requests in progress, when the last one ended (idle exit)

    def idle_s(self) -> float:
        """Seconds since the last request (but ``/health``) ended; 0 while one is in progress."""
        return 0.0 if self.active else time.monotonic() - self.last

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        counts = scope["path"] != "/health"
        self.active += counts
        try:
            return await self._handle(scope, receive, send)
        finally:
            self.active -= counts
            if counts:
                self.last = time.monotonic()

    async def _handle(self, scope, receive, send):
        t0, path = time.perf_counter(), scope["path"] if scope["path"] in PATHS else "other"
        status = [500]

        async def counted_send(msg):
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
            await send(msg)
        try:
            response = self._refuse(scope)
            body = None
            if response is None:
                try:
                    body = await asyncio.wait_for(self._read(receive), self.limits.body_timeout)
                except protocol.Refusal as r:
                    response = r.response()
                except asyncio.TimeoutError:
                    response = protocol.Refusal(408, f"the body did not arrive within {self.limits.body_timeout} s",
                                                CLOSE).response()
            if response is not None:
                return await response(scope, receive, counted_send)
            if body is None:
                status[0] = 499  # the client went away before its body was in
                return
            replay = [{"type": "http.request", "body": body, "more_body": False}]

            async def receive_again():
                return replay.pop() if replay else await receive()
            await self.app(scope, receive_again, counted_send)
        finally:
            self.metrics.requests.labels(path, str(status[0])).inc()
            self.metrics.latency.observe(time.perf_counter() - t0)

    def _refuse(self, scope):
        headers = dict(scope["headers"])
        if scope["path"] != "/health":
            query = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [None])[-1]
            if not protocol.authorized(self.token, headers.get(b"authorization", b"").decode("latin-1"), query):
                return protocol.unauthorized().response()
        size = headers.get(b"content-length")
        if size is not None and (not size.isdigit() or int(size) > self.limits.max_body_bytes):
            return self._too_large().response()
        return None

    def _too_large(self) -> protocol.Refusal:
        # the unread rest of the body cannot be left on the connection: close it
        return protocol.Refusal(413, f"body over {self.limits.max_body_bytes} bytes", CLOSE)

    async def _read(self, receive) -> Optional[bytes]:
        chunks, size = [], 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return None
            chunks.append(msg.get("body", b""))
            size += len(chunks[-1])
            if size > self.limits.max_body_bytes:
                raise self._too_large()
            if not msg.get("more_body", False):
                return b"".join(chunks)


class _Metrics:
    """The app's Prometheus metrics, in a registry of its own (several apps can live in one process)."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        self.registry = CollectorRegistry()
        self.requests = Counter("rbr_requests", "HTTP requests by path and status code", ["path", "code"],
                                registry=self.registry)
        self.latency = Histogram("rbr_request_latency_seconds", "time to answer a request", buckets=LATENCY_BUCKETS,
                                 registry=self.registry)
        self.queue = Gauge("rbr_queue_depth", "items waiting for a grader batch", registry=self.registry)
        self.batcher: Optional[DynamicBatcher] = None
        self.queue.set_function(lambda: self.batcher.depth if self.batcher else 0)
        self.registry.register(self)

    def collect(self):
        """The grader batch sizes, as a histogram made from the batcher's counts."""
        from prometheus_client.core import HistogramMetricFamily
        sizes = dict(self.batcher.sizes) if self.batcher else {}
        buckets = [(str(b), sum(n for s, n in sizes.items() if s <= b)) for b in BATCH_BUCKETS]
        buckets.append(("+Inf", sum(sizes.values())))
        yield HistogramMetricFamily("rbr_batch_size", "items per grader call", buckets=buckets,
                                    sum_value=sum(s * n for s, n in sizes.items()))


def create_app(reward: LazyReward, limits: Limits = Limits(), token: Optional[str] = None,
               policy_tokenizer: Optional[str] = None):
    """The FastAPI app (see the module docstring); ``policy_tokenizer`` reads ``/get_reward``'s
    chat-templated queries as OpenRLHF's file mode does (``protocol.get_reward_items``)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.responses import Response
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    limits.check()
    spec = reward.spec
    if policy_tokenizer:  # loaded now (cached), not by the first request inside the event loop
        tokenizer_template(policy_tokenizer)
    metrics = _Metrics()

    @asynccontextmanager
    async def lifespan(app):
        metrics.batcher = DynamicBatcher(reward.details, limits.max_batch, limits.max_wait_ms, limits.max_queue)
        yield
        await asyncio.to_thread(metrics.batcher.close)  # every queued item is scored first

    app = FastAPI(title="rbr_fast reward server", lifespan=lifespan)

    @app.exception_handler(protocol.Refusal)
    async def refused(request, r: protocol.Refusal):
        return r.response()

    async def run(items: list) -> list[dict]:
        try:
            return await asyncio.wait_for(metrics.batcher.score(items), limits.timeout)
        except TooLarge as e:
            raise protocol.Refusal(413, str(e)) from None
        except QueueFull as e:
            raise protocol.Refusal(503, f"{e}; retry later", {"Retry-After": "1"}) from None
        except asyncio.TimeoutError:
            raise protocol.Refusal(504, f"not scored within {limits.timeout} s") from None
        except Exception as e:  # this request's own items failed, scored alone (see DynamicBatcher)
            log.exception("scoring failed")
            raise protocol.scoring_failed(e) from None

    @app.post("/score")
    async def score(request: Request):
        items, want_details = protocol.score_items(spec, protocol.parse_body(await request.body()))
        return protocol.score_response(await run(items), want_details, spec)

    @app.post("/get_reward")
    async def get_reward(request: Request):
        items = protocol.get_reward_items(spec, protocol.parse_body(await request.body()), policy_tokenizer)
        return protocol.get_reward_response(await run(items))

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics_text():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return _Guard(app, limits, token, metrics)


def header_timeout_protocol(header_timeout: float):
    """uvicorn's h11 protocol with a deadline for every request's headers: uvicorn (and h11) have
    none, so a client that sends half a header line would hold its connection forever."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutH11(H11Protocol):
        _timer: Optional[asyncio.TimerHandle] = None

        def _arm(self) -> None:  # from the connection's start, then from the end of each response
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_later(header_timeout, self._late)

        def _late(self) -> None:
            self._timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():  # headers incomplete
                self.transport.close()

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc) -> None:
            if self._timer is not None:
                self._timer.cancel()
            super().connection_lost(exc)

    return HeaderTimeoutH11


def make_server(reward: LazyReward, host: str = "127.0.0.1", port: int = 8000, limits: Limits = Limits(),
                token: Optional[str] = None, log_level: str = "info", policy_tokenizer: Optional[str] = None):
    """A ``uvicorn.Server`` for the app, with the header deadline (no access log: a token given in
    the URL would be written there; ``/metrics`` counts the requests)."""
    import uvicorn
    config = uvicorn.Config(create_app(reward, limits, token, policy_tokenizer), host=host, port=port,
                            log_level=log_level, http=header_timeout_protocol(limits.header_timeout), access_log=False)
    return uvicorn.Server(config)


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port), so that a taken port or a bad address fails before the model loads."""
    if not 1 <= port <= 65535:
        raise UserError(f"--port must be in 1..65535, got {port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def serve(reward: LazyReward, host: str = "127.0.0.1", port: int = 8000, limits: Limits = Limits(),
          token: Optional[str] = None, sock: Optional[socket.socket] = None,
          policy_tokenizer: Optional[str] = None, idle_exit: Optional[float] = None) -> None:
    """Run the server until interrupted (graceful: accepted requests are answered first), or, with
    ``idle_exit``, until no request but ``/health`` has come for that many seconds (a node-local server
    started for trainer workers, ``node_server``, ends after them)."""
    sock = sock or listen(host, port)
    server = make_server(reward, host, port, limits, token, policy_tokenizer=policy_tokenizer)
    if idle_exit is not None:
        guard = server.config.app

        def watch():
            while not server.should_exit:
                time.sleep(min(1.0, idle_exit / 4))
                if guard.idle_s() > idle_exit:
                    log.info("no request for %.0f s: stopping", idle_exit)
                    server.should_exit = True
        threading.Thread(target=watch, daemon=True, name="rbr-fast-idle-exit").start()
    server.run(sockets=[sock])
