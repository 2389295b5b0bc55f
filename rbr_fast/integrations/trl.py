"""The RBR reward as a TRL reward function (``GRPOTrainer`` / ``RLOOTrainer`` ``reward_funcs``).

    from rbr_fast.integrations.trl import RBRReward
    trainer = GRPOTrainer(model=..., reward_funcs=[RBRReward(weights="xstest")], train_dataset=ds, ...)

TRL calls a reward function with keyword arguments ``prompts``, ``completions`` (strings, or
message lists that may carry tool calls and list-of-parts content), ``completion_ids``, every other
dataset column (one value per completion), and ``log_metric`` / ``log_extra`` (TRL >= 1.0). The
column named by ``response_type_column`` (default ``"response_type"``) gives each prompt's response
type; a missing column or a None entry is inferred from the prompt. Logged: the mean P(yes) of every
proposition as ``rbr/<proposition>``, each response type's share of the batch as
``rbr/<type>/share`` and its mean reward as ``rbr/<type>/reward`` (NaN when the batch holds none of
that type: every call logs the same names, so ranks make the same collective calls in every TRL
version), and per completion its type and most likely class as the ``rbr_response_type`` /
``rbr_class`` columns of the completions table. By default the grader judges the answer without a
reasoning model's leading ``<think>`` block (``reasoning="keep"`` grades it too).

Async forms (TRL runs async reward functions concurrently, and its async GRPO worker pickles them
into a spawned process): ``async_reward_func(RBRReward(...))`` and ``RBRServerReward(url)`` (scores
on a running ``rbr-fast serve``) are ``functools.partial`` objects of module-level coroutine
functions with a ``__name__``: every TRL version sees them as async (``inspect`` and TRL 1.16's
``is_async_callable`` both look through partials), reads a name, and can pickle them.
``RBRServerReward("local", model=..., weights=...)`` starts one server per node for all of them.
"""
from __future__ import annotations

import asyncio
import functools
import math
from typing import Any, Callable, Optional, Sequence

from ..reward import reward_metrics
from .client import MAX_BODY_BYTES, RETRY_S, score_remote
from .lazy_reward import LazyReward
from .node_server import local_server
from .pool import check, config


class RBRReward(LazyReward):
    """A picklable TRL reward function computing the RBR reward (combine it with an RM in TRL's
    ``reward_funcs`` list and ``reward_weights``).

    Args: those of ``LazyReward`` (a ready ``reward``, or ``model``, ``weights`` ("hand", "xstest" or
        a file), ``spec``, ``reasoning`` ("strip" or "keep") and grader options such as ``revision``,
        ``token``, ``dtype``, ``device``), and ``response_type_column``: the dataset column holding each
        prompt's response type.
    """

    __name__ = "rbr"

    def __init__(self, reward=None, *, response_type_column: str = "response_type", **recipe: Any):
        super().__init__(reward, **recipe)
        self.response_type_column = response_type_column

    def __call__(self, prompts: Sequence, completions: Sequence, **kwargs: Any) -> list[float]:
        types = kwargs.get(self.response_type_column) or [None] * len(prompts)
        details = self.details(list(zip(prompts, completions, types)))
        log_details(details, self.spec.response_type_names, kwargs)
        return [d["reward"] for d in details]


def log_details(details: Sequence[dict], type_names: Sequence[str], kwargs: dict) -> None:
    """Report ``details`` through TRL's ``log_metric`` and ``log_extra`` when the call has them: the
    same metric names on every call (``batch_metrics``)."""
    log_metric: Optional[Callable[[str, float], None]] = kwargs.get("log_metric")
    log_extra: Optional[Callable[[str, list], None]] = kwargs.get("log_extra")
    if callable(log_metric) and details:
        for name, value in batch_metrics(details, type_names).items():
            log_metric(name, value)
    if callable(log_extra):
        log_extra("rbr_response_type", [d["response_type"] for d in details])
        log_extra("rbr_class", [max(d["classes"], key=d["classes"].get) for d in details])


def batch_metrics(details: Sequence[dict], type_names: Sequence[str]) -> dict[str, float]:
    """``reward_metrics`` plus, for every response type of the spec, its share of the batch
    (``rbr/<type>/share``) and mean reward (``rbr/<type>/reward``, NaN when the batch holds none of
    it): the same names for every batch of a spec."""
    out = reward_metrics(details)
    for t in type_names:
        rewards = [d["reward"] for d in details if d["response_type"] == t]
        out[f"rbr/{t}/share"] = len(rewards) / len(details)
        out[f"rbr/{t}/reward"] = sum(rewards) / len(rewards) if rewards else math.nan
    return out


@functools.lru_cache(maxsize=None)
def _default() -> RBRReward:
    return RBRReward()


async def rbr_reward_async(prompts: Sequence, completions: Sequence, _rbr_reward: Optional[RBRReward] = None,
                           **kwargs: Any) -> list[float]:
    """The RBR reward for TRL's async path, in a worker thread: ``_rbr_reward`` (as bound by
    ``async_reward_func``) or the default ``RBRReward()``."""
    return await asyncio.to_thread(_rbr_reward or _default(), prompts, completions, **kwargs)


def _named(func: Callable, **bound: Any) -> functools.partial:
    p = functools.partial(func, **bound)
    p.__name__ = func.__name__  # TRL <= 1.8 reads __name__; later versions unwrap the partial
    return p


def async_reward_func(reward: RBRReward) -> functools.partial:
    """``reward`` as an async TRL reward function (picklable, seen as async by every TRL version)."""
    return _named(rbr_reward_async, _rbr_reward=reward)


async def rbr_server(prompts: Sequence, completions: Sequence, _rbr_server: tuple = (), **kwargs: Any) -> list[float]:
    """The RBR reward from a running ``rbr-fast serve`` (``_rbr_server``: as bound by ``RBRServerReward``)."""
    url, token, timeout_s, column, retry_s, max_body_bytes, local = _rbr_server
    if url == "local":  # found (or started) in a thread: the first start blocks for the model load
        url, token, _ = await asyncio.to_thread(local_server, config(**dict(local)))
    types = kwargs.get(column) or [None] * len(prompts)
    scored = await score_remote(url, list(zip(prompts, completions, types)), token, timeout_s, retry_s, max_body_bytes)
    log_details(scored.details, scored.response_types, kwargs)
    return [d["reward"] for d in scored.details]


def RBRServerReward(url: str, token: Optional[str] = None, timeout_s: float = 300.0,
                    response_type_column: str = "response_type", retry_s: float = RETRY_S,
                    max_body_bytes: int = MAX_BODY_BYTES, **options: Any) -> functools.partial:
    """An async TRL reward function scoring on the ``rbr-fast serve`` at ``url`` (``token``: its
    ``--token``): no grader in the trainer's process, picklable for TRL's async GRPO worker. A batch
    goes as requests under ``max_body_bytes`` (the server's ``--max-body-bytes``); 503s and connection
    errors are retried for ``retry_s`` seconds (``client.score_remote``). What is graded of a
    reasoning completion is the server's ``--reasoning``.

    ``url="local"``: this node's server for the reward ``options`` (``model``, ``weights``, ``spec``,
    ``device``, ``dtype``, ``reasoning``, ... as ``pool.ENV`` names them, each also read from its
    ``RBR_FAST_*`` variable), started by the first process that asks and shared by every later one
    (``node_server``): TRL's processes, one per GPU under ``accelerate launch``, then hold one grader
    per node instead of one each. The server makes its own token, so ``token`` is not taken."""
    if url == "local":
        if token is not None:
            raise TypeError("RBRServerReward('local') starts its own server with its own token; do not pass token")
        check(config(**options))  # an unknown or bad option fails here, not in the server's log at the first call
    elif options:
        raise TypeError(f"RBRServerReward: reward options {sorted(options)} apply only with url='local' (a running "
                        "server uses the options it was started with)")
    local = tuple(sorted(options.items()))
    return _named(rbr_server, _rbr_server=(url, token, timeout_s, response_type_column, retry_s, max_body_bytes, local))
