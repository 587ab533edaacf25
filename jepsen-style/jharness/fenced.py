"""The harness-owned fenced resource (Jepsen lock-set, but checking tokens).

A tiny line-JSON TCP store on 127.0.0.1. A write ``{"name", "token", "client", "seq"}`` is
accepted iff ``token >= max_seen[name]`` (then max_seen = token). Every attempt is logged with
the reference time at which the decision was taken, in decision order; that log is the ground
truth for the FT checker. ``broken=True`` accepts every write (the FT teeth test).
"""

from __future__ import annotations

import json
import socketserver
import threading
from typing import Any

from jharness.util import JsonlWriter, now


class FencedResource:
    def __init__(self, log_path: str, *, broken: bool = False) -> None:
        self.broken = broken
        self.max_seen: dict[str, int] = {}
        self.accepted: dict[str, list[dict[str, Any]]] = {}
        self.log = JsonlWriter(log_path)
        self.lock = threading.Lock()
        self.seq = 0
        res = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                for line in self.rfile:
                    try:
                        req = json.loads(line)
                        reply = res.write(req)
                    except Exception as e:
                        reply = {"error": str(e)}
                    self.wfile.write((json.dumps(reply) + "\n").encode())
                    self.wfile.flush()

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def write(self, req: dict[str, Any]) -> dict[str, Any]:
        name, token = str(req["name"]), int(req["token"])
        with self.lock:
            self.seq += 1
            before = self.max_seen.get(name, 0)
            ok = self.broken or token >= before
            if ok:
                self.max_seen[name] = max(before, token)
                self.accepted.setdefault(name, []).append(req)
            rec = {
                "t": now(),
                "order": self.seq,
                "name": name,
                "token": token,
                "client": req.get("client"),
                "wseq": req.get("seq"),
                "accepted": ok,
                "max_before": before,
            }
            self.log.write(rec)
        return {"accepted": ok, "max_seen": before}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.log.close()
