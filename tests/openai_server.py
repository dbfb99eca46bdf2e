"""A small real OpenAI-compatible server for tests: HTTP on loopback, /v1/completions and /v1/chat/completions, backed
by a local HF model through selfimprove's own batched generate. It can fail on purpose: a prompt containing FAIL-ONCE
gets HTTP 503 on its first request (the client must retry), FAIL-ALWAYS always gets 500 (the client must count it)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Server:
    def __init__(self, model_path: str, delay_s: float = 0.0):
        from selfimprove.model import load_policy, load_tokenizer

        self.model, self.tok = load_policy(model_path), load_tokenizer(model_path)
        self.delay_s, self.lock, self.count_lock = delay_s, threading.Lock(), threading.Lock()
        self.requests, self.in_flight, self.max_in_flight, self.failed_once = 0, 0, 0, set()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()

    def complete(self, prompt: str, body: dict) -> tuple[str, bool, int]:
        from selfimprove.generate import Sampling, hf_generate

        sampling = Sampling(1, float(body.get("temperature", 1.0)), float(body.get("top_p", 1.0)),
                            int(body.get("top_k", 0) or 0), int(body.get("max_tokens", 16)))
        with self.lock:  # one generate at a time: torch is not re-entrant across threads here
            out = hf_generate(self.model, self.tok, [prompt], sampling, int(body.get("seed", 0)), 1)[0][0]
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

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                chat = self.path.endswith("/chat/completions")
                prompt = body["messages"][-1]["content"] if chat else body["prompt"]
                with server.count_lock:
                    server.requests += 1
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    transient = "FAIL-ONCE" in prompt and prompt not in server.failed_once
                    server.failed_once.add(prompt)
                try:
                    time.sleep(server.delay_s)
                    if "FAIL-ALWAYS" in prompt:
                        return self._send(500, {"error": {"message": "injected failure"}})
                    if transient:
                        return self._send(503, {"error": {"message": "injected transient failure"}})
                    text, finished, n_tokens = server.complete(prompt, body)
                finally:
                    with server.count_lock:
                        server.in_flight -= 1
                choice = {"index": 0, "finish_reason": "stop" if finished else "length", "logprobs": None}
                choice.update({"message": {"role": "assistant", "content": text}} if chat else {"text": text})
                self._send(200, {"id": "cmpl-test", "object": "chat.completion" if chat else "text_completion",
                                 "created": int(time.time()), "model": body["model"], "choices": [choice],
                                 "usage": {"prompt_tokens": len(prompt), "completion_tokens": n_tokens,
                                           "total_tokens": len(prompt) + n_tokens}})

        return Handler
