"""The demo's traffic generator: runs inside one client namespace, sends a bounded plan of requests.

`python -m authwire.demo.traffic` reads its plan as JSON on stdin (so demo tokens never touch a file):

    {"base": "http://10.77.1.1:8080", "deadline_s": 20,
     "sessions": [[{"path": "/jwt/orders", "authorization": "Bearer ..."}, ...], ...]}

Each session is one TCP connection carrying its requests in order (HTTP/1.1 keep-alive). A request may say
"user_agent" (else the plan's) and a session's first request "source_ip" (one of the host's addresses; the
connection is made from it). One JSON line per request goes to stdout: {"session": i, "path": ...,
"status": 200, "local_port": 40312, "local_ip": ..., "time": <epoch s when sent>} or an "error". The plan is
finite and the whole run is cut at deadline_s.

`python -m authwire.demo.traffic --upstream IP:PORT` is the demo's upstream API instead (200 for all).
"""

from __future__ import annotations

import http.client
import http.server
import json
import sys
import time
from typing import Any
from urllib.parse import urlsplit


def run(plan: dict[str, Any], out=sys.stdout) -> int:
    base = urlsplit(plan["base"])
    deadline = time.monotonic() + float(plan.get("deadline_s", 20))
    failures = 0
    for index, session in enumerate(plan["sessions"]):
        if time.monotonic() > deadline:
            print(json.dumps({"session": index, "error": "deadline reached"}), file=out)
            failures += 1
            break
        source = session[0].get("source_ip") if session else None
        conn = http.client.HTTPConnection(base.hostname, base.port or 80, timeout=5,
                                          source_address=(source, 0) if source else None)
        try:
            for request in session:
                headers = {"User-Agent": request.get("user_agent") or plan.get("user_agent", "authwire-demo/1")}
                if request.get("authorization"):
                    headers["Authorization"] = request["authorization"]
                try:
                    sent = time.time()
                    conn.request("GET", request["path"], headers=headers)
                    response = conn.getresponse()
                    response.read()
                    local_ip, local_port = conn.sock.getsockname()[:2] if conn.sock else ("", 0)
                    print(json.dumps({"session": index, "path": request["path"], "status": response.status,
                                      "local_port": local_port, "local_ip": local_ip, "time": sent,
                                      "case": request.get("case", "")}), file=out)
                except (OSError, http.client.HTTPException) as exc:
                    failures += 1
                    print(json.dumps({"session": index, "path": request["path"], "error": str(exc)}), file=out)
                    break
        finally:
            conn.close()
    out.flush()
    return 1 if failures else 0


class _Upstream(http.server.BaseHTTPRequestHandler):
    """The API behind the gateway: 200 for every path, keep-alive."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802
        body = b'{"ok": true}\n'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve_upstream(address: str) -> None:
    host, _, port = address.rpartition(":")
    http.server.ThreadingHTTPServer((host, int(port)), _Upstream).serve_forever()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--upstream"] and len(args) == 2:
        serve_upstream(args[1])
        return 0
    return run(json.load(sys.stdin))


if __name__ == "__main__":
    raise SystemExit(main())
