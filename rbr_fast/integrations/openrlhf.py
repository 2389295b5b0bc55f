"""The RBR reward as an OpenRLHF reward-function file (OpenRLHF 0.10.2+):

    --reward.remote_url <site-packages>/rbr_fast/integrations/openrlhf.py

OpenRLHF executes this file as a fresh module named ``reward_func`` in every vLLM engine actor, and
calls ``reward_func(queries, prompts, labels)`` positionally, once per sample (lists of length one)
from many threads at once. So this file uses absolute imports only and keeps no state: the calls of
a process are pooled into grader batches by ``rbr_fast.integrations.pool``.

Options come from ``RBR_FAST_*`` environment variables (OpenRLHF passes none; give them to the Ray
job, e.g. ``ray job submit --runtime-env-json '{"env_vars": {"RBR_FAST_MODEL": ...}}'``):
``RBR_FAST_MODEL`` (a folder, hub id or served grader URL), ``RBR_FAST_GRADER_URL``, ``RBR_FAST_WEIGHTS``,
``RBR_FAST_SPEC``, ``RBR_FAST_DEVICE``, ``RBR_FAST_DTYPE``, ``RBR_FAST_MEMORY_GIB`` (a cap on the grader's
memory: on the engine's GPU, what vLLM's ``gpu_memory_utilization`` leaves),
``RBR_FAST_MAX_BATCH``, ``RBR_FAST_MAX_WAIT_MS``, ``RBR_FAST_REASONING`` (``strip``, the default:
grade the answer without a reasoning model's leading ``<think>`` block; ``keep``), and ``RBR_FAST_POLICY_TOKENIZER``: the policy's
tokenizer, whose chat template says how to read the text back into messages (without it the
ChatML, Llama-3 and Gemma templates are recognised by their markers, anything else is read as
plain text). ``RBR_FAST_LOCAL_SERVER=1``: every engine actor on the node scores through one ``rbr-fast
serve`` for these options, started by the first call (``node_server``), instead of loading a grader
of its own (OpenRLHF starts one actor per vLLM engine, so one grader each otherwise).

The query is the chat-templated prompt plus the response, decoded with special tokens kept: the
grader gets the conversation as messages and the response without its end-of-turn / end-of-text
tokens. A label that names a response type (``hard_refuse``, ``Comply``, ...) is used as such;
otherwise the type is inferred from the prompt. Returns ``{"rewards", "scores", "extra_logs"}``:
rewards are the RBR reward; scores are P(best class of the response type), in [0, 1], which is what
OpenRLHF's dynamic filtering averages per prompt (a group is kept when that mean is strictly inside
``--algo.dynamic_filtering_range``; with the default (0, 1) no group is dropped, so narrow it,
e.g. ``0.05 0.95``, to drop prompts every sample already handles well or badly); extra_logs hold
every proposition's P(yes). A failure raises after one ERROR line naming the cause: OpenRLHF 0.11
(``openrlhf/utils/agent.py``) logs a reward function's exception only at INFO and leaves that
sample's reward None, which its trainer does not handle; no reward is made up here.
"""
import logging
import os
from typing import Any, Optional, Sequence

import torch

from rbr_fast.integrations.client import get_reward_remote, run_sync
from rbr_fast.integrations.node_server import local_server
from rbr_fast.integrations.pool import config, options, pooled
from rbr_fast.integrations.protocol import get_reward_items, get_reward_response

log = logging.getLogger("rbr_fast.openrlhf")


def reward_func(queries: Sequence[str], prompts: Sequence[str], labels: Optional[Sequence[Any]] = None,
                **kwargs: Any) -> dict:
    """OpenRLHF's reward call (see the module docstring); blocks its thread, thread-safe."""
    payload = {"query": list(queries), "prompts": list(prompts), "labels": None if labels is None else list(labels)}
    try:
        if os.environ.get("RBR_FAST_LOCAL_SERVER", "") not in ("", "0"):
            # the node's server reads the queries with its own policy tokenizer and spec
            url, token, _ = local_server(config(**options(kwargs)))
            out = run_sync(get_reward_remote(url, payload, token))
        else:
            pool = pooled(**options(kwargs))
            items = get_reward_items(pool.reward.spec, payload, config(**options(kwargs)).get("policy_tokenizer"))
            out = get_reward_response([f.result() for f in pool.batcher.submit(items)])
    except Exception as e:
        log.error("rbr_fast OpenRLHF reward: %d sample(s) failed: %s: %s", len(queries), type(e).__name__, e)
        raise
    return {"rewards": torch.tensor(out["rewards"], dtype=torch.float32),
            "scores": torch.tensor(out["scores"], dtype=torch.float32),
            "extra_logs": {k: torch.tensor(v, dtype=torch.float32) for k, v in out["extra_logs"].items()}}
