"""A real HTTP server on 127.0.0.1 that speaks the OpenAI chat-completions protocol, answering from a script.

Tests drive kubevolve's LLM client (the `openai` SDK) against it: every byte crosses a real socket, and the
server records each request so a test can check what the prompt contained.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Server(ThreadingHTTPServer):
    # the listen backlog: the default (5) refuses connections when a run opens more at once (a pipelined run
    # with 16 slots sends 19 proposals together)
    request_queue_size = 256


@dataclass
class Reply:
    content: str = ""
    status: int = 200
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    error: str = ""


Responder = Callable[[dict[str, Any], int], Reply]  # (request body, 0-based call index) -> reply


class OpenAIServer:
    def __init__(self, responder: Responder):
        self.responder = responder
        self.requests: list[dict[str, Any]] = []
        self.authorization: list[str] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:  # noqa: N802 (the http.server API)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    index = len(server.requests)
                    server.requests.append(body)
                    server.authorization.append(self.headers.get("Authorization", ""))
                reply = server.responder(body, index)
                if reply.delay:
                    time.sleep(reply.delay)
                if self.path.rstrip("/") != "/v1/chat/completions":
                    reply = Reply(status=404, error=f"no route {self.path}")
                if reply.status != 200:
                    payload = {"error": {"message": reply.error or "scripted error", "type": "scripted"}}
                else:
                    prompt = " ".join(m["content"] for m in body["messages"])
                    payload = {
                        "id": f"chatcmpl-{index}",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": reply.content},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {
                            "prompt_tokens": len(prompt) // 4,
                            "completion_tokens": len(reply.content) // 4,
                            "total_tokens": len(prompt) // 4 + len(reply.content) // 4,
                        },
                    }
                data = json.dumps(payload).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def prompts(self) -> list[str]:
        return ["\n".join(m["content"] for m in r["messages"]) for r in self.requests]

    def __enter__(self) -> OpenAIServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
