"""The reward as a Ray Serve deployment: ``replicas`` copies, each with a grader of its own, behind
Ray's HTTP proxy, with the same ``POST /score``, ``POST /get_reward`` and ``GET /health`` as
``rbr-fast serve`` (``protocol``: the same checks, refusals and answers).

Each replica pools the items of its concurrent requests with Ray's ``@serve.batch`` (one call per
item, up to ``max_batch`` items per grader call); a grader call that fails is retried submission by
submission (``batching.score_isolated``), so only the request at fault gets its 500. Replicas ask
Ray for ``num_cpus`` CPUs (default 0: they share the node) and ``num_gpus`` GPUs (a fraction
shares one GPU between replicas).

    rbr-fast serve --ray --replicas 2 [--port 8000] [--model PATH] ...

or from Python: ``start(LazyReward(model=...), replicas=2)``; ``serve.shutdown()`` stops it.
"""
import asyncio
import itertools
from typing import Optional

from fastapi import FastAPI, Request
from ray import serve

from . import protocol
from .batching import score_isolated
from .chat_parse import tokenizer_template
from .lazy_reward import LazyReward

app = FastAPI(title="rbr_fast reward (Ray Serve)")


@app.exception_handler(protocol.Refusal)
async def _refused(request, r: protocol.Refusal):
    return r.response()


@serve.deployment(name="rbr_reward", ray_actor_options={"num_cpus": 0})
@serve.ingress(app)
class RewardDeployment:
    """One replica: a grader of its own, loaded before the replica takes requests."""

    def __init__(self, reward: LazyReward, max_batch: int, max_wait_ms: float, token: Optional[str],
                 policy_tokenizer: Optional[str] = None):
        self.reward, self.token, self.policy_tokenizer = reward, token, policy_tokenizer
        reward.reward  # load now
        if policy_tokenizer:
            tokenizer_template(policy_tokenizer)
        self._submissions = itertools.count()
        self._score_one.set_max_batch_size(max_batch)
        self._score_one.set_batch_wait_timeout_s(max_wait_ms / 1e3)

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.02)
    async def _score_one(self, entries: list) -> list:
        """A batch of (item, submission) pairs: each item's details, or its submission's exception."""
        items, groups = [e[0] for e in entries], [e[1] for e in entries]
        return await asyncio.to_thread(score_isolated, self.reward.details, items, groups)

    async def _body(self, request: Request) -> dict:
        """The request's JSON body, once its token is checked."""
        query = request.query_params.get("token")
        if not protocol.authorized(self.token, request.headers.get("authorization", ""), query):
            raise protocol.unauthorized()
        return protocol.parse_body(await request.body())

    async def _run(self, items: list) -> list:
        group = next(self._submissions)
        results = await asyncio.gather(*(self._score_one((it, group)) for it in items))
        failed = next((r for r in results if isinstance(r, Exception)), None)
        if failed is not None:
            raise protocol.scoring_failed(failed)
        return results

    @app.post("/score")
    async def score(self, request: Request):
        items, want_details = protocol.score_items(self.reward.spec, await self._body(request))
        return protocol.score_response(await self._run(items), want_details, self.reward.spec)

    @app.post("/get_reward")
    async def get_reward(self, request: Request):
        items = protocol.get_reward_items(self.reward.spec, await self._body(request), self.policy_tokenizer)
        return protocol.get_reward_response(await self._run(items))

    @app.get("/health")
    async def health(self):
        return {"status": "ok", "replica": serve.get_replica_context().replica_id.unique_id}


def start(reward: LazyReward, replicas: int = 1, host: str = "127.0.0.1", port: int = 8000, max_batch: int = 64,
          max_wait_ms: float = 20.0, timeout: float = 120.0, token: Optional[str] = None, num_cpus: float = 0.0,
          num_gpus: float = 0.0, blocking: bool = False, policy_tokenizer: Optional[str] = None):
    """Deploy on the running Ray cluster (one is started on this machine, without the dashboard, if
    none is) and serve HTTP on host:port; returns the deployment handle (``blocking``: serve until
    interrupted)."""
    import ray
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": host, "port": port, "request_timeout_s": timeout})
    # a replica never fills a batch when it may hold fewer requests than a batch's items
    deployment = RewardDeployment.options(num_replicas=replicas, max_ongoing_requests=4 * max_batch,
                                          ray_actor_options={"num_cpus": num_cpus, "num_gpus": num_gpus})
    return serve.run(deployment.bind(reward, max_batch, max_wait_ms, token, policy_tokenizer), name="rbr_fast",
                     route_prefix="/", blocking=blocking)
