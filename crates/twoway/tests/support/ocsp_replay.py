"""An HTTP server answering every GET or POST with the bytes of one file, as an OCSP
responder would (application/ocsp-response): a recorded answer replayed, or garbage.

Usage: ocsp_replay.py PORT FILE   (127.0.0.1 only; runs until killed)
"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if 0 < length <= 65536:
            self.rfile.read(length)
        with open(sys.argv[2], "rb") as f:
            body = f.read()
        self.send_response(200)
        self.send_header("Content-Type", "application/ocsp-response")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = answer
    do_POST = answer


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
