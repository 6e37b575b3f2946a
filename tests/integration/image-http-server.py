#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# A small HTTP server on loopback for the image pull tests: serves DIR, and misbehaves on
# purpose: /drop/NAME announces the full Content-Length, sends half of NAME and closes the
# connection; /slow/NAME sends half then stalls. Every request path is appended to DIR/requests.log.
# Prints the port on stdout once listening.  Usage: image-http-server.py DIR
import http.server
import os
import sys
import time

root = sys.argv[1]


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        with open(os.path.join(root, "requests.log"), "a") as log:
            log.write(self.path + "\n")
        mode, _, name = self.path.lstrip("/").partition("/")
        if mode not in ("files", "drop", "slow"):
            name, mode = self.path.lstrip("/"), "files"
        path = os.path.join(root, os.path.basename(name))
        if not name or not os.path.isfile(path):
            self.send_error(404, "Not Found")
            return
        with open(path, "rb") as f:
            data = f.read()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if mode == "files":
            self.wfile.write(data)
            return
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        if mode == "slow":
            time.sleep(30)
        self.close_connection = True


srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(srv.server_address[1], flush=True)
srv.serve_forever()
