"""The RBR reward as a verl custom reward function (verl 0.8 - 0.9.1, the reward loop).

    reward.custom_reward_function.path=pkg://rbr_fast.integrations.verl     # recommended
    reward.custom_reward_function.name=compute_score
    +reward.custom_reward_function.reward_kwargs.model=/path/to/grader      # optional, see below

``pkg://`` imports this real module. A file path to this file works too: verl then executes it as
a fresh module (``custom_module_<hash>``, outside ``sys.modules``) in every reward worker, which
is why this file uses absolute imports only, defines no dataclasses and keeps no state: the grader
and its batcher live in ``rbr_fast.integrations.pool``, one per process and configuration.

``compute_score`` is a coroutine function: verl's reward loop awaits it with every sample of a
worker in flight at once, and the samples are pooled into grader batches of up to ``max_batch``.
``compute_score_sync`` is the same reward as a plain function, for callers that need one (verl's
``remote`` reward manager, the legacy managers); verl runs those in a thread pool of at most 32
threads, so its batches stay below 32.

Options (verl passes ``reward_kwargs`` into every call, over the call's own keyword arguments):
``model`` (a folder, hub id or served grader URL), ``grader_url`` (a served grader for the propositions
without a head), ``weights`` ("hand", "xstest" or a file), ``spec``, ``device``, ``dtype``, ``memory_gib``, ``max_batch``,
``max_wait_ms``, ``reasoning`` ("strip", the default: grade the answer without a leading ``<think>``
block; "keep"), each also read from ``RBR_FAST_<NAME>``; ``on_error`` (default "raise"; a number: a
sample that cannot be scored gets that score, NaN logs and ``rbr/failed`` 1.0, so that verl's
``limited`` manager sees the same keys for every sample); or ``server_url`` (+ ``token``, ``retry_s``)
to score on a running ``rbr-fast serve`` instead of a grader in this process (the server's options
apply); or ``server_url="local"`` with the grader options: one server on this node for them, started
by the first caller (``node_server``), so that verl's ``remote`` manager, 8 actors per worker, loads
one grader per node. Any other keyword is refused by name, but for those verl's own managers pass
(``reward_router_address``, ``reward_model_tokenizer``).

Each sample: the prompt is ``extra_info["raw_prompt"]`` (chat messages; verl's agent loop puts it
there), else ``extra_info["prompt"]``, else ``extra_info["question"]`` (a manager that passes none,
e.g. ``dapo`` on data without them, fails with an error naming ``extra_info["prompt"]``); the response
type is ``extra_info["response_type"]``, else ``ground_truth`` when it names a type (checked by the
server in server mode), else inferred from the prompt. Returns ``{"score": reward, "rbr/p_ideal":
P(best class), "rbr/<proposition>": P(yes), ..., "rbr/failed": 0.0}`` with the same keys for every
sample (verl stacks them per key). A sample that cannot be scored raises, after one ERROR log line
(unless ``on_error`` is a number): verl's ``naive`` and ``dapo`` managers stop the step rather than
train on a made-up reward; ``limited`` turns the exception into 0.0.
"""
import asyncio
import logging
import math
from typing import Any, Optional

from rbr_fast.integrations.client import RETRY_S, run_sync, score_remote
from rbr_fast.integrations.items import as_type, check_item, p_ideal, sample_log_names, sample_logs
from rbr_fast.integrations.node_server import local_server
from rbr_fast.integrations.pool import ENV, config, options, pooled

log = logging.getLogger("rbr_fast.verl")
_PROMPT_KEYS = ("raw_prompt", "prompt", "question")
_GRADER_OPTIONS = set(ENV) - {"policy_tokenizer"}  # this process's grader and batcher
_SERVER_OPTIONS = {"server_url", "token", "retry_s"}
_VERL_KWARGS = {"reward_router_address", "reward_model_tokenizer"}  # passed by verl's managers, unused here


def _check_options(kwargs: dict) -> None:
    url = kwargs.get("server_url")
    if url == "local":  # the grader options configure the node's server
        known = _GRADER_OPTIONS | {"server_url", "retry_s"}
    else:
        known = _SERVER_OPTIONS if url else _GRADER_OPTIONS | {"on_error"}
    known |= _VERL_KWARGS
    unknown = sorted(set(kwargs) - known)
    if unknown:
        where = "" if not url else " with server_url=local" if url == "local" else \
            " with server_url (the server's own options apply)"
        raise TypeError(f"unknown rbr_fast verl option(s) {unknown}{where}; known: {sorted(known - _VERL_KWARGS)}")
    on_error = kwargs.get("on_error", "raise")
    if on_error != "raise" and (isinstance(on_error, bool) or not isinstance(on_error, (int, float))):
        raise TypeError(f"on_error must be 'raise' or a number, got {on_error!r}")


def _running_loop() -> bool:
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        return False


def _item(solution_str: Any, ground_truth: Any, extra_info: Optional[dict], spec=None) -> tuple:
    info = extra_info if isinstance(extra_info, dict) else {}
    prompt = next((info[k] for k in _PROMPT_KEYS if info.get(k) is not None), None)
    if hasattr(prompt, "tolist"):  # verl may hand non-tensor data over as numpy object arrays
        prompt = prompt.tolist()
    if prompt is None:
        raise ValueError("no prompt in extra_info: add extra_info['prompt'] (the prompt text or messages) to every "
                         "row when preprocessing the data (only verl's agent loop adds extra_info['raw_prompt'])")
    rtype = info.get("response_type")
    if spec is None:  # scored by a server, which reads the type or the ground_truth label with its own spec
        return prompt, solution_str, rtype, ground_truth if isinstance(ground_truth, str) else None
    return check_item(spec, prompt, solution_str, rtype if rtype is not None else as_type(spec, ground_truth), "sample")


def _result(detail: dict) -> dict:
    return {"score": detail["reward"], "rbr/p_ideal": p_ideal(detail), **sample_logs(detail), "rbr/failed": 0.0}


def _failed(data_source: Any, e: Exception, on_error: Any = "raise", spec=None) -> dict:
    """After one ERROR line: raise ``e``, or with a numeric ``on_error`` the sample's result with
    that score (every other key NaN, ``rbr/failed`` 1.0)."""
    log.error("rbr_fast verl reward: a %r sample failed: %s: %s", data_source, type(e).__name__, e)
    if on_error == "raise":
        raise e
    return {"score": float(on_error), **{k: math.nan for k in ["rbr/p_ideal", *sample_log_names(spec)]},
            "rbr/failed": 1.0}


async def _remote(kwargs: dict, item: tuple):
    """``item`` scored on ``server_url`` (``"local"``: this node's server, started by the first caller;
    found in a thread, as the start blocks)."""
    url, token = kwargs["server_url"], kwargs.get("token")
    if url == "local":
        url, token, _ = await asyncio.to_thread(local_server, config(**options(kwargs)))
    return await score_remote(url, [item], token, retry_s=kwargs.get("retry_s", RETRY_S))


async def compute_score(data_source: Any = None, solution_str: Any = None, ground_truth: Any = None,
                        extra_info: Optional[dict] = None, **kwargs: Any) -> dict:
    """verl's per-sample reward call, awaited (see the module docstring)."""
    try:
        _check_options(kwargs)  # a wrong option raises, whatever on_error says
        if kwargs.get("server_url"):
            scored = await _remote(kwargs, _item(solution_str, ground_truth, extra_info))
            return _result(scored.details[0])
        pool = pooled(**options(kwargs))
    except Exception as e:
        return _failed(data_source, e)
    try:
        (detail,) = await pool.batcher.score([_item(solution_str, ground_truth, extra_info, pool.reward.spec)])
        return _result(detail)
    except Exception as e:
        return _failed(data_source, e, kwargs.get("on_error", "raise"), pool.reward.spec)


def compute_score_sync(data_source: Any = None, solution_str: Any = None, ground_truth: Any = None,
                       extra_info: Optional[dict] = None, **kwargs: Any) -> dict:
    """``compute_score`` for callers that need a plain function (blocks its thread; thread-safe; with
    ``server_url``, on the process's client loop (``client.run_sync``), so not from inside a running loop)."""
    try:
        _check_options(kwargs)
        if kwargs.get("server_url"):
            if _running_loop():
                raise ValueError("compute_score_sync was called inside a running event loop: use the coroutine "
                                 "compute_score (name=compute_score)")
            return _result(run_sync(_remote(kwargs, _item(solution_str, ground_truth, extra_info))).details[0])
        pool = pooled(**options(kwargs))
    except Exception as e:
        return _failed(data_source, e)
    try:
        return _result(pool.batcher(_item(solution_str, ground_truth, extra_info, pool.reward.spec)))
    except Exception as e:
        return _failed(data_source, e, kwargs.get("on_error", "raise"), pool.reward.spec)
