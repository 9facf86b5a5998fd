"""A real HTTPS file server for tests: serves the files of DIR over TLS with the
test PKI's certificate, and appends each request's path to DIR/requests.log. A file
DIR/NAME.status holding a number makes GET /NAME answer with that status instead.

    python https_files.py CERT KEY DIR

Prints `READY <port>` when it listens on 127.0.0.1."""

import os
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

cert, key, root = sys.argv[1:4]


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        name = self.path.lstrip("/").split("?")[0]
        with open(os.path.join(root, "requests.log"), "a") as log:
            log.write(self.path + "\n")
        path = os.path.join(root, name)
        status_file = path + ".status"
        if os.path.exists(status_file):
            self.send_response(int(open(status_file).read().strip()))
            self.end_headers()
            return
        if not name or not os.path.isfile(path):
            self.send_response(404)
            self.end_headers()
            return
        body = open(path, "rb").read()
        self.send_response(200)
        self.send_header("Content-Type", "text/calendar")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
print(f"READY {server.server_address[1]}", flush=True)
server.serve_forever()
