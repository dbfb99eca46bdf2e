"""A small real OpenAI-compatible server on loopback, standing in for ``vllm serve`` in ``--smoke`` runs and tests:
HTTP, ``GET /v1/models``, ``POST /v1/completions`` and ``/v1/chat/completions`` (the chat template of the served
model applied to the messages, as vLLM does), backed by a local HF model through selfimprove's own batched generate.
Requests are answered one at a time (torch is not re-entrant across threads here); each honours its seed.

    with LoopbackServer(model_dir, name="Qwen/Qwen2.5-7B-Instruct") as server:
        server.url   # http://127.0.0.1:PORT/v1

``fault(prompt)`` may return an HTTP status to fail a request with (tests override it to exercise retries).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from selfimprove.backends import Sampling
from selfimprove.backends.hf import hf_generate
from selfimprove.core.model import load_policy, load_tokenizer


class LoopbackServer:
    def __init__(self, model_path: str, name: str = "", delay_s: float = 0.0):
        self.model, self.tok = load_policy(model_path), load_tokenizer(model_path)
        self.name = name or model_path
        self.delay_s, self.lock, self.count_lock = delay_s, threading.Lock(), threading.Lock()
        self.requests, self.in_flight, self.max_in_flight = 0, 0, 0
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def fault(self, prompt: str) -> int | None:
        return None

    def complete(self, prompt: str, body: dict, chat: bool) -> tuple[str, bool, int]:
        if chat:
            if not getattr(self.tok, "chat_template", None):
                raise ValueError("the served model's tokenizer has no chat template: use /v1/completions")
            prompt = self.tok.apply_chat_template(body["messages"], tokenize=False, add_generation_prompt=True)
        sampling = Sampling(
            1,
            float(body.get("temperature", 1.0)),
            float(body.get("top_p", 1.0)),
            int(body.get("top_k", 0) or 0),
            int(body.get("max_tokens", 16)),
        )
        with self.lock:
            out = hf_generate(
                self.model, self.tok, [prompt], sampling, int(body.get("seed", 0)), 1, add_special_tokens=not chat
            )[0][0]
        return out["completion"], out["finished"], out["num_tokens"]

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, code: int, payload: dict):
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if not self.path.rstrip("/").endswith("/v1/models"):
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                self._send(
                    200, {"object": "list", "data": [{"id": server.name, "object": "model", "owned_by": "selfimprove"}]}
                )

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                chat = self.path.endswith("/chat/completions")
                prompt = body["messages"][-1]["content"] if chat else body["prompt"]
                with server.count_lock:
                    server.requests += 1
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    status = server.fault(prompt)
                try:
                    time.sleep(server.delay_s)
                    if body.get("model") != server.name:
                        return self._send(404, {"error": {"message": f"model {body.get('model')!r} is not served"}})
                    if status:
                        return self._send(status, {"error": {"message": "injected failure"}})
                    text, finished, n_tokens = server.complete(prompt, body, chat)
                except ValueError as err:
                    return self._send(400, {"error": {"message": str(err)}})
                finally:
                    with server.count_lock:
                        server.in_flight -= 1
                choice = {"index": 0, "finish_reason": "stop" if finished else "length", "logprobs": None}
                choice.update({"message": {"role": "assistant", "content": text}} if chat else {"text": text})
                self._send(
                    200,
                    {
                        "id": "cmpl-loopback",
                        "object": "chat.completion" if chat else "text_completion",
                        "created": int(time.time()),
                        "model": body["model"],
                        "choices": [choice],
                        "usage": {
                            "prompt_tokens": len(prompt),
                            "completion_tokens": n_tokens,
                            "total_tokens": len(prompt) + n_tokens,
                        },
                    },
                )

        return Handler
