"""A small OpenAI-compatible completions server on loopback, in a thread, that answers with a real
(tiny) causal LM: what the served-grader tests use to check prompts, log-prob parsing and every
failure mode without a model server. Behaviour is set through attributes between requests."""
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch


class Stub:
    """``Stub(model, tokenizer)``; ``.url`` (the ``/v1`` root), ``.prompts`` (every prompt in arrival
    order), ``.fail`` (status codes to answer with before answering normally), ``.logprobs`` (False:
    choices without log-probs), ``.shape`` ("list": OpenAI's legacy top_logprobs, "content": the
    chat-style list), ``.max_top`` (fewest top log-probs returned), ``.delay`` (seconds per request),
    ``.stop()``."""

    def __init__(self, model, tokenizer, name: str = "tiny"):
        self.model, self.tok, self.name = model, tokenizer, name
        self.prompts, self.fail, self.logprobs, self.shape, self.max_top, self.delay = [], [], True, "list", 1 << 30, 0.0
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path == "/v1/models":
                    return self._send(200, {"object": "list", "data": [{"id": stub.name, "object": "model"}]})
                self._send(404, {"detail": "not found"})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                time.sleep(stub.delay)
                with stub._lock:
                    code = stub.fail.pop(0) if stub.fail else 200
                if code != 200:
                    return self._send(code, {"error": {"message": f"stub failure {code}"}})
                if self.path != "/v1/completions" or body.get("model") != stub.name:
                    return self._send(404, {"error": {"message": f"model {body.get('model')!r} not found"}})
                with stub._lock:
                    stub.prompts.append(body["prompt"])
                self._send(200, stub.complete(body["prompt"], int(body.get("logprobs") or 0)))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def complete(self, prompt: str, k: int) -> dict:
        ids = torch.tensor([self.tok(prompt, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            lp = torch.log_softmax(self.model(ids).logits[0, -1].double(), -1)
        top = lp.topk(min(k, self.max_top, lp.numel()))
        pairs = [(self.tok.decode([int(i)]), float(v)) for v, i in zip(top.values, top.indices)]
        choice = {"text": pairs[0][0] if pairs else "", "index": 0, "finish_reason": "length"}
        if self.logprobs:
            if self.shape == "list":
                choice["logprobs"] = {"tokens": [pairs[0][0]], "token_logprobs": [pairs[0][1]],
                                      "top_logprobs": [dict(pairs)]}
            else:
                choice["logprobs"] = {"content": [{"token": pairs[0][0], "logprob": pairs[0][1],
                                                   "top_logprobs": [{"token": t, "logprob": v} for t, v in pairs]}]}
        return {"id": "cmpl-stub", "object": "text_completion", "model": self.name, "choices": [choice]}

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
