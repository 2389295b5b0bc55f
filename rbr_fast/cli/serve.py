"""``rbr-fast serve``: the RBR reward over HTTP with dynamic batching (uvicorn, or Ray Serve)."""
from __future__ import annotations

import argparse
import os

from ..errors import UserError
from ..io import check_model_location
from .common import number


def run(a: argparse.Namespace) -> int:
    """Check everything (limits, port, spec, weights, then the model) before serving: a bad option is
    one error line and exit status 2, never a server that answers 500 to every request."""
    from ..integrations.lazy_reward import LazyReward
    from ..integrations.server import Limits, listen, serve
    if a.ray and a.idle_exit is not None:
        raise UserError("--idle-exit stops the uvicorn server; Ray Serve deployments are stopped with `serve shutdown`")
    if a.model:
        check_model_location(a.model, "--model")
    try:
        limits = Limits(a.max_batch, a.max_wait_ms, a.max_queue, a.max_body_bytes, a.timeout, a.header_timeout,
                        a.body_timeout).check(as_options=True)
    except ValueError as e:
        raise UserError(str(e)) from None
    if a.policy_tokenizer:  # read now: a wrong name fails before the server starts
        from ..integrations.chat_parse import tokenizer_template
        check_model_location(a.policy_tokenizer, "--policy-tokenizer")
        try:
            tokenizer_template(a.policy_tokenizer)
        except OSError as e:
            raise UserError(f"--policy-tokenizer {a.policy_tokenizer}: {(str(e).splitlines() or [''])[0]}") from None
    reward = LazyReward(model=a.model, weights=a.weights, spec=a.spec, dtype=a.dtype, device=a.device,
                        memory_gib=a.memory_gib, grader_url=a.grader_url, reasoning=a.reasoning)
    sock = listen(a.host, a.port)
    try:
        if a.ray:
            sock.close()  # Ray's proxy binds the port itself; each replica loads the model
            from rbr_fast.integrations import ray_serve
        else:
            reward.reward  # load the grader now
    except BaseException:
        sock.close()
        raise
    if a.ray:
        ray_serve.start(reward, a.replicas, a.host, a.port, limits.max_batch, limits.max_wait_ms, limits.timeout,
                        a.token, blocking=True, policy_tokenizer=a.policy_tokenizer)
    else:
        serve(reward, a.host, a.port, limits, a.token, sock, a.policy_tokenizer, a.idle_exit)
    return 0


def register(sub) -> None:
    v = sub.add_parser("serve", help="the RBR reward over HTTP with dynamic batching (uvicorn, or Ray Serve)")
    v.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    v.add_argument("--port", type=number(int, 1, 65535), default=8000)
    v.add_argument("--token", default=os.environ.get("RBR_FAST_TOKEN") or None,
                   help="require 'Authorization: Bearer TOKEN' or '?token=TOKEN' (default: $RBR_FAST_TOKEN, none "
                        "when unset)")
    v.add_argument("--model", help="grader model folder or hub id, or a served grader's URL (http://HOST:PORT/v1"
                                   "#model=NAME; see `rbr-fast grade --help`) (default: the embedded SmolLM2)")
    v.add_argument("--grader-url", help="a served grader that answers the propositions without a trained head")
    v.add_argument("--weights", help="'hand', 'xstest' or a weights JSON (default: fitted on XSTest for the default spec, else hand-set)")
    v.add_argument("--spec", help="rule spec YAML (default: the shipped safety spec)")
    v.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA/AMX, else fp32), float32, bfloat16, float16")
    v.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    v.add_argument("--memory-gib", type=number(float, 0, open_low=True),
                   help="cap on the grader's memory (weights + one pass): passes are sized to fit (default: none)")
    v.add_argument("--reasoning", choices=("strip", "keep"), default="strip",
                   help="strip (default): grade the answer without a reasoning model's leading <think> block; "
                        "keep: grade the completion as sent")
    v.add_argument("--policy-tokenizer", default=os.environ.get("RBR_FAST_POLICY_TOKENIZER") or None,
                   help="/get_reward (OpenRLHF): the policy's tokenizer (folder or hub id), whose chat template "
                        "says how to read the queries, as the OpenRLHF reward file does (default: "
                        "$RBR_FAST_POLICY_TOKENIZER; without it ChatML, Llama-3 and Gemma are recognised)")
    v.add_argument("--max-batch", type=number(int, 1), default=64, help="items per grader call (1: no batching)")
    v.add_argument("--max-wait-ms", type=number(float, 0), default=20.0,
                   help="how long a batch's first item waits for company")
    v.add_argument("--max-queue", type=number(int, 1), default=4096, help="queued items before answering 503")
    v.add_argument("--max-body-bytes", type=number(int, 1), default=4 << 20)
    v.add_argument("--timeout", type=number(float, 0, open_low=True), default=120.0,
                   help="seconds per request before 504")
    v.add_argument("--header-timeout", type=number(float, 0, open_low=True), default=10.0,
                   help="seconds for a request's headers to arrive")
    v.add_argument("--body-timeout", type=number(float, 0, open_low=True), default=30.0,
                   help="seconds for a request's body, after its headers")
    v.add_argument("--idle-exit", type=number(float, 0, open_low=True), default=None, metavar="S",
                   help="stop after S seconds without a request (but /health); default: run until interrupted")
    v.add_argument("--ray", action="store_true", help="serve on Ray Serve (pip install 'ray[serve]'): --replicas "
                                                     "copies of the grader behind Ray's proxy")
    v.add_argument("--replicas", type=number(int, 1), default=1, help="with --ray: number of replicas")
    v.set_defaults(func=run)
