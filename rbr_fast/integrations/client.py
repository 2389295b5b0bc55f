"""An async client of a running ``rbr-fast serve`` (or its Ray Serve deployment): what the adapters
use instead of a grader of their own when several trainer processes should share one."""
from __future__ import annotations

import json
from typing import Any, Optional, Sequence


def _placeholder(obj: Any) -> str:
    """What the grader reads for a value JSON cannot carry (an image in a list-of-parts content):
    its part type is kept beside it, so the transcript shows ``[image]`` as it does locally."""
    return f"<{type(obj).__name__}>"


async def score_remote(url: str, items: Sequence[tuple], token: Optional[str] = None,
                       timeout_s: float = 300.0) -> list[dict]:
    """``details`` of (prompt, completion, response type or None) items from the server at ``url``
    (its ``POST /score``); raises ``RuntimeError`` with the server's message on any answer but 200."""
    import httpx
    body = {"items": [{"prompt": p, "completion": c, "response_type": t} for p, c, t in items], "details": True}
    headers = {"content-type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    async with httpx.AsyncClient(timeout=timeout_s) as http:
        r = await http.post(url.rstrip("/") + "/score", content=json.dumps(body, default=_placeholder), headers=headers)
    if r.status_code != 200:
        try:
            detail = r.json().get("detail", r.text)
        except ValueError:
            detail = r.text
        raise RuntimeError(f"{url}/score answered {r.status_code}: {detail}")
    return r.json()["details"]
