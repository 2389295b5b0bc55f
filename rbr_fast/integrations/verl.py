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
without a head), ``weights`` ("hand", "xstest" or a file), ``spec``, ``device``, ``dtype``, ``max_batch``,
``max_wait_ms``, each also read from ``RBR_FAST_<NAME>``; or ``server_url`` (+ ``token``) to score
on a running ``rbr-fast serve`` instead of a grader in this process.

Each sample: the prompt is ``extra_info["raw_prompt"]`` (chat messages; verl's agent loop puts it
there), else ``extra_info["prompt"]``, else ``extra_info["question"]``; the response type is
``extra_info["response_type"]``, else ``ground_truth`` when it names a type, else inferred from the
prompt. Returns ``{"score": reward, "rbr/p_ideal": P(best class), "rbr/<proposition>": P(yes), ...}``
with the same keys for every sample (verl stacks them per key). A sample that cannot be scored
raises, after one ERROR log line: verl stops the step rather than train on a made-up reward.
"""
import logging
from typing import Any, Optional

from rbr_fast.integrations.client import score_remote
from rbr_fast.integrations.items import as_type, check_item, p_ideal, sample_logs
from rbr_fast.integrations.pool import options, pooled

log = logging.getLogger("rbr_fast.verl")
_PROMPT_KEYS = ("raw_prompt", "prompt", "question")


def _item(solution_str: Any, ground_truth: Any, extra_info: Optional[dict], spec=None) -> tuple:
    info = extra_info if isinstance(extra_info, dict) else {}
    prompt = next((info[k] for k in _PROMPT_KEYS if info.get(k) is not None), None)
    if hasattr(prompt, "tolist"):  # verl may hand non-tensor data over as numpy object arrays
        prompt = prompt.tolist()
    if prompt is None:
        raise ValueError("no prompt: put it in extra_info['prompt'] when preprocessing the data (verl's agent "
                         "loop adds extra_info['raw_prompt'] itself)")
    rtype = info.get("response_type")
    if spec is None:  # scored by a server, which checks the item against its own spec
        return prompt, solution_str, rtype
    return check_item(spec, prompt, solution_str, rtype if rtype is not None else as_type(spec, ground_truth), "sample")


def _result(detail: dict) -> dict:
    return {"score": detail["reward"], "rbr/p_ideal": p_ideal(detail), **sample_logs(detail)}


def _log_failure(data_source: Any, e: Exception) -> None:
    log.error("rbr_fast verl reward: a %r sample failed: %s: %s", data_source, type(e).__name__, e)


async def compute_score(data_source: Any = None, solution_str: Any = None, ground_truth: Any = None,
                        extra_info: Optional[dict] = None, **kwargs: Any) -> dict:
    """verl's per-sample reward call, awaited (see the module docstring)."""
    try:
        if kwargs.get("server_url"):
            item = _item(solution_str, ground_truth, extra_info)
            (detail,) = await score_remote(kwargs["server_url"], [item], kwargs.get("token"))
        else:
            pool = pooled(**options(kwargs))
            (detail,) = await pool.batcher.score([_item(solution_str, ground_truth, extra_info, pool.reward.spec)])
        return _result(detail)
    except Exception as e:
        _log_failure(data_source, e)
        raise


def compute_score_sync(data_source: Any = None, solution_str: Any = None, ground_truth: Any = None,
                       extra_info: Optional[dict] = None, **kwargs: Any) -> dict:
    """``compute_score`` for callers that need a plain function (blocks its thread; thread-safe)."""
    try:
        if kwargs.get("server_url"):
            raise ValueError("server_url needs the coroutine compute_score")
        pool = pooled(**options(kwargs))
        return _result(pool.batcher(_item(solution_str, ground_truth, extra_info, pool.reward.spec)))
    except Exception as e:
        _log_failure(data_source, e)
        raise
