"""The loopback OpenAI-compatible server (selfimprove.smoke.server) with failures injected on purpose: a prompt
containing FAIL-ONCE gets HTTP 503 on its first request (the client must retry), FAIL-ALWAYS always gets 500 (the
client must count it)."""

from __future__ import annotations

from selfimprove.smoke.server import LoopbackServer


class Server(LoopbackServer):
    def __init__(self, model_path: str, name: str = "tiny", delay_s: float = 0.0):
        super().__init__(model_path, name, delay_s)
        self.failed_once: set[str] = set()

    def fault(self, prompt: str) -> int | None:
        if "FAIL-ALWAYS" in prompt:
            return 500
        if "FAIL-ONCE" in prompt and prompt not in self.failed_once:
            self.failed_once.add(prompt)
            return 503
        return None
