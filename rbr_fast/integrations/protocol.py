"""The reward server's HTTP protocol, shared by ``rbr-fast serve`` and its Ray Serve deployment:
request bodies into checked items, results into response bodies, the token check.

``POST /score``: ``{"items": [{"prompt", "completion", "response_type"?, "label"?}], "details"?: bool}``
(``label``: used as the type when ``response_type`` is absent and it names one, as verl's
``ground_truth``; otherwise ignored) ->
``{"rewards": [...], "details"?: [...], "response_types": [the spec's type names]}``. ``POST /get_reward`` (OpenRLHF's ``--reward.remote_url``
protocol): ``{"query": [...], "prompts"?: [...], "labels"?: [...]}`` -> ``{"rewards", "scores",
"extra_logs"}``, one entry per query (empty lists are answered with empty lists: OpenRLHF sends
empty shards to all but its first server).

Every refusal is a ``Refusal(status, message)`` whose message is one line naming the item and field
at fault; it never carries a traceback nor any other request's text.
"""
from __future__ import annotations

import hmac
import json
from typing import Optional

from ..rules import RuleSpec
from .chat_parse import split_query, tokenizer_template
from .items import ItemError, as_type, check_item, p_ideal, sample_logs


class Refusal(Exception):
    def __init__(self, status: int, detail: str, headers: Optional[dict] = None):
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers or {}

    def response(self):
        """As a starlette response, in ASCII JSON: a client's lone surrogate can never make the
        answer itself fail to encode."""
        from starlette.responses import Response
        return Response(json.dumps({"detail": self.detail}), self.status, self.headers, media_type="application/json")


def scoring_failed(e: Exception) -> Refusal:
    """500 for a request whose own items failed to score (alone: see ``batching.score_isolated``)."""
    return Refusal(500, f"scoring failed: {type(e).__name__}: {(str(e).splitlines() or [''])[0][:300]}")


def unauthorized() -> Refusal:
    return Refusal(401, "missing or wrong token (Authorization: Bearer TOKEN or ?token=TOKEN)")


def authorized(token: Optional[str], authorization: str, query_token: Optional[str]) -> bool:
    """With a token set, a request needs ``Authorization: Bearer <token>`` or ``?token=<token>`` (for
    clients that send no headers, as OpenRLHF's); compared in constant time."""
    if token is None:
        return True
    want = token.encode()
    return (hmac.compare_digest(authorization.encode(), b"Bearer " + want)
            or (query_token is not None and hmac.compare_digest(query_token.encode(), want)))


def parse_body(raw: bytes) -> dict:
    try:
        body = json.loads(raw)
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError both
        raise Refusal(422, f"the body is not JSON: {e}") from None
    if not isinstance(body, dict):
        raise Refusal(422, f"the body must be a JSON object, got {type(body).__name__}")
    return body


def _list(body: dict, key: str, what: str, n: Optional[int] = None) -> Optional[list]:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, list):
        raise Refusal(422, f"{key} must be a list of {what}, got {type(value).__name__}")
    if n is not None and len(value) != n:
        raise Refusal(422, f"{key} has {len(value)} entries for {n} queries")
    return value


def score_items(spec: RuleSpec, body: dict) -> tuple[list, bool]:
    """(checked items, whether details are wanted) of a ``/score`` body."""
    items = _list(body, "items", "{prompt, completion, response_type?} objects")
    if items is None:
        raise Refusal(422, "items: required (a list of {prompt, completion, response_type?} objects)")
    details = body.get("details", False)
    if not isinstance(details, bool):
        raise Refusal(422, f"details must be true or false, got {type(details).__name__}")
    out = []
    for i, it in enumerate(items):
        if not isinstance(it, dict):
            raise Refusal(422, f"items[{i}] must be an object, got {type(it).__name__}")
        for field in ("prompt", "completion"):
            if field not in it:
                raise Refusal(422, f"items[{i}].{field}: required")
        try:
            rtype = it.get("response_type")
            rtype = as_type(spec, it.get("label")) if rtype is None else rtype
            out.append(check_item(spec, it["prompt"], it["completion"], rtype, f"items[{i}]"))
        except ItemError as e:
            raise Refusal(422, str(e)) from None
    return out, details


def get_reward_items(spec: RuleSpec, body: dict, policy_tokenizer: Optional[str] = None) -> list:
    """Items of a ``/get_reward`` body: each query split into conversation and reply
    (``chat_parse.split_query``), a label that names a response type used as one. The one reading
    of OpenRLHF's queries, in file mode (``openrlhf.reward_func``) and server mode (``/get_reward``):
    ``policy_tokenizer`` (a folder or hub id) gives the chat template's markers
    (``chat_parse.tokenizer_template``); without it the built-in families are detected in the text."""
    template = tokenizer_template(policy_tokenizer) if policy_tokenizer else None
    queries = _list(body, "query", "strings")
    if queries is None:
        raise Refusal(422, "query: required (a list of strings)")
    prompts = _list(body, "prompts", "strings", len(queries)) or [""] * len(queries)
    labels = _list(body, "labels", "labels", len(queries)) or [None] * len(queries)
    for key, values in (("query", queries), ("prompts", prompts)):
        bad = next((i for i, v in enumerate(values) if not isinstance(v, str)), None)
        if bad is not None:
            raise Refusal(422, f"{key}[{bad}] must be a string, got {type(values[bad]).__name__}")
    return [(*split_query(q, p, template), as_type(spec, x)) for q, p, x in zip(queries, prompts, labels)]


def score_response(details: list[dict], want_details: bool, spec: RuleSpec) -> dict:
    """A ``/score`` answer: rewards, details when wanted, and the spec's response type names (so a
    client logs a metric for every type, present in its batch or not)."""
    return {"rewards": [d["reward"] for d in details], **({"details": details} if want_details else {}),
            "response_types": list(spec.response_type_names)}


def get_reward_response(details: list[dict]) -> dict:
    """OpenRLHF's reward dict, one entry per query: rewards, scores = P(best class) in [0, 1], and
    per-proposition P(yes) as extra logs."""
    logs = [sample_logs(d) for d in details]
    return {"rewards": [d["reward"] for d in details], "scores": [p_ideal(d) for d in details],
            "extra_logs": {k: [x[k] for x in logs] for k in (logs[0] if logs else ())}}
