"""A minimal OpenAI-compatible chat server on 127.0.0.1 whose behaviour a caller scripts:
a fixed answer, slowness, garbage, server errors. For the fault tests of the HTTP backend and the
reliability suite's generator-fault scenarios (a script may be changed while the server runs)."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class Script:
    content: str = '{"intent": "atis_flight", "slots": []}'
    delay_s: float = 0.0
    status: list[int] = field(default_factory=list)  # consumed first: e.g. [500] then 200
    raw_body: str | None = None
    requests: list[dict] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)  # of each request, as received


@contextmanager
def chat_server(script: Script, port: int = 0) -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            script.requests.append(body)
            script.headers.append({k.lower(): v for k, v in self.headers.items()})
            time.sleep(script.delay_s)
            status = script.status.pop(0) if script.status else 200
            payload = (
                script.raw_body
                if script.raw_body is not None
                else json.dumps(
                    {"choices": [{"message": {"role": "assistant", "content": script.content}}]}
                )
            )
            data = payload.encode()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # caller timed out
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
