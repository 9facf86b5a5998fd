"""A real HTTP server for tests of pings and webhooks: records every request as a JSON
line {"method", "path", "body"} in OUT, and answers 200, or the status that the file
OUT.status holds (to make it fail).

    python http_recorder.py OUT

Prints `READY <port>` when it listens on 127.0.0.1."""

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

out = sys.argv[1]


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        with open(out, "a") as f:
            f.write(json.dumps({"method": self.command, "path": self.path, "body": body,
                                "type": self.headers.get("Content-Type", "")}) + "\n")
        status = 200
        if os.path.exists(out + ".status"):
            status = int(open(out + ".status").read().strip())
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = answer
    do_POST = answer


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(f"READY {server.server_address[1]}", flush=True)
server.serve_forever()
